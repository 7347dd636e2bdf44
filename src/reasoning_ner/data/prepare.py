"""``rner data prepare``: raw files -> ``<out>/<dataset>/<split>.jsonl`` + ``stats.json``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..records import NERRecord, write_json, write_jsonl
from .catalog import DATASET_NAMES, DatasetSpec, available_splits, get_spec, iter_split

#: Prefix of the reference-format evaluation file next to a prepared dataset's splits.
REFERENCE_PREFIX = "reference-"


def split_stats(records: list[NERRecord]) -> dict[str, Any]:
    """Sentences, entity spans and per-label counts of one split.

    ``mentions`` counts annotated mentions as the source lists them; it differs from ``entities``
    only for string-annotated sources (Pile-NER), where one mention string is grounded to every
    place it occurs.
    """
    per_label = Counter(e.label for r in records for e in r.entities)
    mentions = sum(int(r.meta.get("mentions", len(r.entities))) for r in records)
    ungrounded = sum(len(r.meta.get("ungrounded", [])) for r in records)
    return {
        "sentences": len(records),
        "entities": sum(len(r.entities) for r in records),
        "mentions": mentions,
        "ungrounded_mentions": ungrounded,
        "per_label": dict(sorted(per_label.items())),
        "schema_sizes": {str(k): v for k, v in sorted(Counter(len(r.schema) for r in records).items())},
    }


def prepare_dataset(
    name: str,
    source_dir: Path,
    out_dir: Path,
    source_format: str = "native",
    keep_invalid: bool = False,
    on_record: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Convert every split of one dataset; returns (and writes) its stats."""
    spec = get_spec(name)
    files = available_splits(spec, source_dir, source_format)
    stats: dict[str, Any] = {
        "dataset": name,
        "source_format": source_format,
        "keep_invalid_labels": keep_invalid,
        "schema": spec.schema(keep_invalid),
        "files": {split: str(path) for split, path in files.items()},
        "splits": {},
    }
    for split in files:
        records = []
        for record in iter_split(spec, split, source_dir, source_format, keep_invalid):
            records.append(record)
            if on_record:
                on_record(1)
        write_jsonl(out_dir / name / f"{split}.jsonl", records)
        stats["splits"][split] = split_stats(records)
    stats["parity"] = prepare_reference_test(spec, source_dir, out_dir / name)
    write_json(out_dir / name / "stats.json", stats)
    return stats


def reference_test_path(dataset_dir: Path, split: str = "test") -> Path:
    """Where the reference's evaluation file of a prepared dataset lives (parity mode)."""
    return dataset_dir / f"{REFERENCE_PREFIX}{split}.jsonl"


def prepare_reference_test(spec: DatasetSpec, source_dir: Path, dataset_dir: Path) -> dict[str, Any] | None:
    """Also write the test split exactly as the reference evaluates it (InstructUIE ``test.json``,
    its gold rules: :mod:`reasoning_ner.parity`), for paper-parity evaluation. None when the dataset
    has no InstructUIE copy or the copy is not in ``source_dir``."""
    if spec.instructuie_dir is None:
        return None
    try:
        records = list(iter_split(spec, "test", source_dir, "reference"))
    except FileNotFoundError:
        return None
    path = reference_test_path(dataset_dir)
    write_jsonl(path, records)
    return {"file": str(path), "gold_dropped_outside_schema": sum(r.meta["reference_dropped"] for r in records),
            **split_stats(records)}


def resolve_names(dataset: str | Iterable[str]) -> list[str]:
    if isinstance(dataset, str):
        names = list(DATASET_NAMES) if dataset == "all" else [d.strip() for d in dataset.split(",") if d.strip()]
    else:
        names = list(dataset)
    if not names:
        raise ValueError(f"no dataset named in {dataset!r}; give names (comma-separated) or 'all': {', '.join(DATASET_NAMES)}")
    for n in names:
        get_spec(n)  # raises with the list of known names
    return names


def prepare(
    dataset: str | Iterable[str],
    source_dir: Path,
    out_dir: Path,
    source_format: str = "native",
    keep_invalid: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare one, several (comma-separated) or ``all`` datasets with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    names = resolve_names(dataset)
    if source_format == "instructuie":
        names = [n for n in names if get_spec(n).instructuie_dir is not None] if dataset == "all" else names
    summary: dict[str, Any] = {}
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        TimeElapsedColumn(),
        disable=not progress,
    ) as bar:
        for name in names:
            task = bar.add_task(f"{name:<20}", total=None)
            stats = prepare_dataset(
                name, source_dir, out_dir, source_format, keep_invalid, on_record=lambda n: bar.advance(task, n)
            )
            bar.update(task, total=bar.tasks[task].completed)
            summary[name] = stats
    datasets = {n: {s: v["sentences"] for s, v in st["splits"].items()} for n, st in summary.items()}
    summary_path = out_dir / "prepare_summary.json"
    if summary_path.is_file():  # datasets prepared earlier into the same folder from the same source stay listed
        earlier = json.loads(summary_path.read_text())
        if (earlier.get("source_dir"), earlier.get("source_format")) == (str(source_dir), source_format):
            datasets = {**earlier.get("datasets", {}), **datasets}
    write_json(summary_path, {"source_dir": str(source_dir), "source_format": source_format, "datasets": datasets})
    return summary
