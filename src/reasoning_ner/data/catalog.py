"""Which files make up each dataset, in each source format, and how to read them.

Native names and paths follow ``shared/data`` (see its README and SOURCE.md files). Each
benchmark dataset has one fixed schema (its documented label set, mapped and cleaned); Pile-NER
records carry their own per-passage schema (open types with negative sampling).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..labels import (
    CONLL2003_LABELS,
    CROSSNER_LABELS,
    INSTRUCTUIE_LABELS,
    MIT_MOVIE_LABELS,
    MIT_RESTAURANT_LABELS,
    make_schema,
    map_label,
)
from ..parity import reference_label, reference_schema
from ..records import NERRecord
from .formats import (
    FormatError,
    RecordContext,
    read_conll2003,
    read_crossner,
    read_gliner,
    read_instructuie,
    read_mit,
    read_slimer_pile_ner,
)

Reader = Callable[[Path, RecordContext], Iterator[NERRecord]]

CROSSNER_TYPES = {
    "ai": "algorithm conference country field location metrics misc organisation person product programlang researcher task university",
    "literature": "award book country event literarygenre location magazine misc organisation person poem writer",
    "music": "album award band country event location misc musicalartist musicalinstrument musicgenre organisation person song",
    "politics": "country election event location misc organisation person politicalparty politician",
    "science": "academicjournal astronomicalobject award chemicalcompound chemicalelement country discipline enzyme event "
    "location misc organisation person protein scientist theory university",
}
CROSSNER_IUIE_DIRS = {
    "ai": "CrossNER_AI",
    "literature": "CrossNER_literature",
    "music": "CrossNER_music",
    "politics": "CrossNER_politics",
    "science": "CrossNER_science",
}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    #: split -> (path relative to the data root, reader)
    native_files: dict[str, tuple[str, Reader]]
    label_map: dict[str, str] | None = None
    #: raw tag names of the dataset's label set; None = per-record (open) schema
    raw_types: tuple[str, ...] | None = None
    instructuie_dir: str | None = None
    hub: dict[str, str] = field(default_factory=dict)

    def schema(self, keep_invalid: bool = False) -> list[str] | None:
        if self.raw_types is None:
            return None
        return make_schema({map_label(t, self.label_map) for t in self.raw_types}, keep_invalid)


def _crossner(domain: str) -> DatasetSpec:
    return DatasetSpec(
        name=f"crossner_{domain}",
        native_files={s: (f"crossner/{domain}/{s}.txt", read_crossner) for s in ("train", "dev", "test")},
        label_map=CROSSNER_LABELS,
        raw_types=tuple(CROSSNER_TYPES[domain].split()),
        instructuie_dir=CROSSNER_IUIE_DIRS[domain],
        hub={"repo": "DFKI-SLT/cross_ner", "config": domain, "kind": "bio"},
    )


CATALOG: dict[str, DatasetSpec] = {
    "conll2003": DatasetSpec(
        name="conll2003",
        native_files={
            "train": ("conll2003/train.txt", read_conll2003),
            "dev": ("conll2003/valid.txt", read_conll2003),
            "test": ("conll2003/test.txt", read_conll2003),
        },
        label_map=CONLL2003_LABELS,
        raw_types=tuple(CONLL2003_LABELS),
        instructuie_dir="CoNLL 2003",
        hub={"repo": "eriktks/conll2003", "kind": "bio"},
    ),
    **{f"crossner_{d}": _crossner(d) for d in CROSSNER_TYPES},
    "mit_movie": DatasetSpec(
        name="mit_movie",
        native_files={s: (f"mit_movie/{s}.txt", read_mit) for s in ("train", "test")},
        label_map=MIT_MOVIE_LABELS,
        raw_types=tuple(MIT_MOVIE_LABELS),
        instructuie_dir="mit-movie",
    ),
    "mit_restaurant": DatasetSpec(
        name="mit_restaurant",
        native_files={s: (f"mit_restaurant/{s}.txt", read_mit) for s in ("train", "test")},
        label_map=MIT_RESTAURANT_LABELS,
        raw_types=tuple(MIT_RESTAURANT_LABELS),
        instructuie_dir="mit-restaurant",
    ),
    "pile_ner": DatasetSpec(
        name="pile_ner",
        native_files={
            # SLIMER's FalseDef validation file holds a superset of the TrueDef passages.
            "train": ("pile_ner_subsets/slimer_391types_FalseDef_validation.jsonl", read_slimer_pile_ner),
            "sample": ("pile_ner_subsets/gliner_sample_data.json", read_gliner),
        },
        hub={"repo": "Universal-NER/Pile-NER-type", "kind": "pile_ner_conversations"},
    ),
}

DATASET_NAMES: tuple[str, ...] = tuple(CATALOG)


def get_spec(name: str) -> DatasetSpec:
    if name not in CATALOG:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
    return CATALOG[name]


def available_splits(spec: DatasetSpec, source_dir: Path, source_format: str) -> dict[str, Path]:
    """split -> file for the chosen source format; raises when the dataset's files are missing."""
    if source_format == "native":
        files = {split: source_dir / rel for split, (rel, _) in spec.native_files.items()}
    elif source_format in ("instructuie", "reference"):
        if spec.instructuie_dir is None:
            raise ValueError(f"dataset {spec.name} has no InstructUIE copy; use --format native")
        base = source_dir / "ie_instructions_ner" / spec.instructuie_dir
        files = {split: base / f"{split}.json" for split in ("train", "dev", "test")}
    else:
        raise ValueError(f"unknown source format {source_format!r}; use native, instructuie or reference")
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"dataset {spec.name} ({source_format}): missing file(s) {', '.join(missing)}; "
            f"is --source pointing at the shared data folder?"
        )
    return files


def iter_split(
    spec: DatasetSpec, split: str, source_dir: Path, source_format: str = "native", keep_invalid: bool = False
) -> Iterator[NERRecord]:
    """Canonical records of one split of one dataset, read from the raw files."""
    files = available_splits(spec, source_dir, source_format)
    if split not in files:
        raise ValueError(f"dataset {spec.name} ({source_format}) has no split {split!r}; it has {', '.join(files)}")
    path = files[split]
    if source_format == "native":
        reader = spec.native_files[split][1]
        ctx = RecordContext(spec.name, split, spec.label_map, spec.schema(keep_invalid), keep_invalid, "native")
    else:
        label_file = path.parent / "labels.json"
        try:
            raw_labels = json.loads(label_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise FormatError(f"{label_file}: cannot read the label list ({exc})") from exc
        reader = read_instructuie
        if source_format == "reference":
            yield from _reference_records(path, RecordContext(spec.name, split, None, reference_schema(raw_labels), False, "reference"))
            return
        schema = make_schema({map_label(t, INSTRUCTUIE_LABELS) for t in raw_labels}, keep_invalid)
        ctx = RecordContext(spec.name, split, INSTRUCTUIE_LABELS, schema, keep_invalid, "instructuie")
    for record in reader(path, ctx):
        if ctx.schema is not None:
            unknown = sorted({e.label for e in record.entities} - set(ctx.schema))
            if unknown:
                raise FormatError(
                    f"{path}: record {record.id} has label(s) {unknown} outside the {spec.name} label set "
                    f"{ctx.schema}; add them to the dataset's label map"
                )
        yield record


def _reference_records(path: Path, ctx: RecordContext) -> Iterator[NERRecord]:
    """The InstructUIE file as the reference's evaluation reads it (:mod:`reasoning_ner.parity`):
    labels lower-cased only, gold whose label is outside the dataset's schema dropped, not renamed."""
    for record in read_instructuie(path, ctx, label_of=reference_label):
        kept = [e for e in record.entities if e.label in ctx.schema]
        record.meta["reference_dropped"] = len(record.entities) - len(kept)
        record.entities = kept
        yield record
