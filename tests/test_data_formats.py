"""Readers on every file of every dataset: exact offsets, counts from each SOURCE.md, label maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasoning_ner.data.catalog import CATALOG, DATASET_NAMES, get_spec, iter_split
from reasoning_ner.data.formats import (
    FormatError,
    RecordContext,
    bio_to_record,
    read_gliner,
    read_ner_cot,
    read_slimer_pile_ner,
)
from reasoning_ner.data.prepare import prepare_dataset, resolve_names
from reasoning_ner.labels import INVALID_LABELS

# (sentences, entity mentions incl. misc) per split, copied from shared/data/*/SOURCE.md.
NATIVE_COUNTS = {
    "conll2003": {"train": (14041, 23499), "dev": (3250, 5942), "test": (3453, 5648)},
    "crossner_ai": {"train": (100, 532), "dev": (350, 1549), "test": (431, 1809)},
    "crossner_literature": {"train": (100, 541), "dev": (400, 2130), "test": (416, 2266)},
    "crossner_music": {"train": (100, 648), "dev": (380, 2679), "test": (465, 3336)},
    "crossner_politics": {"train": (200, 1304), "dev": (541, 3482), "test": (651, 4209)},
    "crossner_science": {"train": (200, 1075), "dev": (450, 2538), "test": (543, 3089)},
    "mit_movie": {"train": (9775, 21295), "test": (2443, 5339)},
    "mit_restaurant": {"train": (7660, 15363), "test": (1521, 3151)},
    "pile_ner": {"train": (882, 1582), "sample": (64, 236)},
}
INSTRUCTUIE_COUNTS = {
    "conll2003": {"train": (14041, 23499), "dev": (3250, 5942), "test": (3453, 5648)},
    "crossner_ai": {"train": (100, 531), "dev": (350, 1546), "test": (431, 1804)},
    "crossner_literature": {"train": (100, 541), "dev": (400, 2125), "test": (416, 2263)},
    "crossner_music": {"train": (100, 648), "dev": (380, 2679), "test": (465, 3334)},
    "crossner_politics": {"train": (199, 1297), "dev": (540, 3472), "test": (650, 4200)},
    "crossner_science": {"train": (200, 1074), "dev": (450, 2537), "test": (543, 3088)},
    "mit_movie": {"train": (9774, 21294), "dev": (2442, 5338), "test": (2442, 5338)},
    "mit_restaurant": {"train": (7659, 15363), "dev": (1520, 3150), "test": (1520, 3150)},
}
# Per-label spot checks (SOURCE.md), after the label map.
LABEL_COUNTS = {
    ("conll2003", "train"): {"location": 7140, "organization": 6321, "person": 6600, "misc": 3438},
    ("crossner_ai", "test"): {"program language": 60, "organization": 145, "misc": 181, "researcher": 160},
    ("crossner_music", "dev"): {"musical artist": 472, "music genre": 360, "musical instrument": 42},
    ("crossner_science", "test"): {"astronomical object": 337, "chemical element": 85, "academic journal": 180},
    ("mit_movie", "test"): {"average ratings": 451, "character": 90, "actor": 812},
    ("mit_restaurant", "train"): {"restaurant name": 1901, "amenity": 2541},
}


def _all_records(data_dir: Path, fmt: str, counts: dict) -> dict:
    out = {}
    for name, splits in counts.items():
        for split in splits:
            out[(name, split)] = list(iter_split(get_spec(name), split, data_dir, fmt, keep_invalid=True))
    return out


@pytest.fixture(scope="module")
def native_records(data_dir: Path) -> dict:
    return _all_records(data_dir, "native", NATIVE_COUNTS)


@pytest.fixture(scope="module")
def instructuie_records(data_dir: Path) -> dict:
    return _all_records(data_dir, "instructuie", INSTRUCTUIE_COUNTS)


def _mentions(records) -> int:
    return sum(int(r.meta.get("mentions", len(r.entities))) for r in records)


def test_native_counts_match_source_md(native_records: dict) -> None:
    for (name, split), records in native_records.items():
        expected_sentences, expected_mentions = NATIVE_COUNTS[name][split]
        assert len(records) == expected_sentences, (name, split)
        assert _mentions(records) == expected_mentions, (name, split)


def test_instructuie_counts_match_source_md(instructuie_records: dict) -> None:
    for (name, split), records in instructuie_records.items():
        assert (len(records), _mentions(records)) == INSTRUCTUIE_COUNTS[name][split], (name, split)
        assert all(r.source_format == "instructuie" for r in records)


def test_per_label_counts_after_label_map(native_records: dict) -> None:
    for key, expected in LABEL_COUNTS.items():
        records = native_records[key]
        for label, count in expected.items():
            assert sum(e.label == label for r in records for e in r.entities) == count, (key, label)


@pytest.mark.parametrize("fmt", ["native", "instructuie"])
def test_offsets_exact_on_every_file(fmt: str, native_records: dict, instructuie_records: dict) -> None:
    records_by_split = native_records if fmt == "native" else instructuie_records
    checked = 0
    for records in records_by_split.values():
        for r in records:
            for e in r.entities:
                assert r.text[e.start : e.end] == e.text, (r.id, e)
                checked += 1
        assert len({r.id for r in records}) == len(records)
    assert checked > 100_000


def test_slimer_truedef_file_also_reads_exactly(data_dir: Path) -> None:
    # Not part of the prepared dataset (FalseDef holds a superset of its passages), but a real file.
    path = data_dir / "pile_ner_subsets" / "slimer_391types_TrueDef_validation.jsonl"
    records = list(read_slimer_pile_ner(path, RecordContext("pile_ner", "truedef", keep_invalid=True)))
    assert len(records) == 880
    assert _mentions(records) == 1576
    for r in records:
        r.validate()
        assert not r.meta.get("ungrounded")


def test_pile_ner_regrouped_by_passage_with_negative_types(native_records: dict) -> None:
    records = native_records[("pile_ner", "train")]
    # 1,320 (passage, type) rows regroup into 882 passages; negatives keep their type in the schema.
    assert sum(len(r.schema) for r in records) >= 1300 - 20
    with_negative = [r for r in records if set(r.schema) - {e.label for e in r.entities}]
    assert len(with_negative) > 300
    assert all(r.schema == sorted(r.schema) for r in records)


def test_invalid_labels_dropped_by_default_and_kept_on_request(data_dir: Path) -> None:
    spec = get_spec("conll2003")
    dropped = list(iter_split(spec, "test", data_dir))
    kept = list(iter_split(spec, "test", data_dir, keep_invalid=True))
    assert spec.schema() == ["location", "organization", "person"]
    assert "misc" in spec.schema(keep_invalid=True)
    assert not any(e.label in INVALID_LABELS for r in dropped for e in r.entities)
    assert sum(e.label == "misc" for r in kept for e in r.entities) == 702
    assert all(r.schema == ["location", "organization", "person"] for r in dropped)
    iuie = list(iter_split(spec, "test", data_dir, "instructuie"))
    assert iuie[0].schema == ["location", "organization", "person"]  # "else" dropped from labels.json


def test_instructuie_music_quirk_maps_organisation(instructuie_records: dict) -> None:
    labels = {e.label for r in instructuie_records[("crossner_music", "test")] for e in r.entities}
    assert "organization" in labels and "organisation" not in labels
    assert "else" in labels and "misc" not in labels  # kept only because this fixture keeps invalid labels


def test_native_and_instructuie_texts_agree(native_records: dict, instructuie_records: dict) -> None:
    # Both are the tokens joined by single spaces, so the same sentence has the same text.
    native = [r.text for r in native_records[("crossner_ai", "test")]]
    iuie = [r.text for r in instructuie_records[("crossner_ai", "test")]]
    assert native == iuie


def test_bio_tags_become_character_spans() -> None:
    ctx = RecordContext("t", "x", {"PER": "person", "LOC": "location"}, ["location", "person"])
    r = bio_to_record(ctx, 0, ["Ada", "Lovelace", "met", "Babbage", "in", "London", "."],
                      ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "O"], "here")
    assert r.text == "Ada Lovelace met Babbage in London ."
    assert [(e.text, e.label) for e in r.entities] == [("Ada Lovelace", "person"), ("Babbage", "person"), ("London", "location")]
    # IOB1: an I- tag that does not continue a span of its type opens a new one.
    r = bio_to_record(ctx, 1, ["Paris", "Berlin"], ["I-LOC", "I-PER"], "here")
    assert [(e.text, e.label) for e in r.entities] == [("Paris", "location"), ("Berlin", "person")]


def test_bad_tag_names_file_and_token() -> None:
    ctx = RecordContext("t", "x")
    with pytest.raises(FormatError, match=r"f.txt:3: token 1 has tag 'X-PER'"):
        bio_to_record(ctx, 0, ["a", "b"], ["O", "X-PER"], "f.txt:3")


def test_unknown_label_is_reported(tmp_path: Path) -> None:
    (tmp_path / "mit_movie").mkdir()
    (tmp_path / "mit_movie" / "train.txt").write_text("B-ACTOR\ttom\nB-SPACESHIP\tenterprise\n\n")
    (tmp_path / "mit_movie" / "test.txt").write_text("O\thello\n\n")
    with pytest.raises(FormatError, match="spaceship.*outside the mit_movie label set"):
        list(iter_split(get_spec("mit_movie"), "train", tmp_path))


def test_missing_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="conll2003/train.txt"):
        list(iter_split(get_spec("conll2003"), "train", tmp_path))
    with pytest.raises(ValueError, match="known datasets"):
        resolve_names("conll2003,nope")


def test_gliner_token_spans(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps([{"tokenized_text": ["Grace", "Hopper", "wrote", "COBOL", "."],
                                 "ner": [[0, 1, "Person"], [3, 3, "Programming Language"]]}]))
    (r,) = read_gliner(path, RecordContext("pile_ner", "sample"))
    assert [(e.text, e.label) for e in r.entities] == [("Grace Hopper", "person"), ("COBOL", "programming language")]
    assert r.schema == ["person", "programming language"]
    path.write_text(json.dumps([{"tokenized_text": ["a"], "ner": [[0, 4, "x"]]}]))
    with pytest.raises(FormatError, match="outside 1 tokens"):
        list(read_gliner(path, RecordContext("pile_ner", "sample")))


def test_ner_cot_record_is_grounded(tmp_path: Path) -> None:
    rows = [
        {"guid": "g1", "dataset": None, "sentence": "Marie Curie worked in Paris and loved Paris.",
         "schema": ["Person", "Location", "misc"], "cot": "Okay, Marie Curie is a person; Paris is a city.",
         "entities": [{"text": "Marie Curie", "label": "person"}, {"text": "Paris", "label": "location"},
                      {"text": "Warsaw", "label": "location"}]},
    ]
    path = tmp_path / "cot.json"
    path.write_text(json.dumps(rows))
    (r,) = read_ner_cot(path, RecordContext("ner_cot", "train"))
    assert r.id == "ner_cot-train-g1"
    assert r.schema == ["location", "person"]
    assert r.cot.startswith("Okay")
    assert [(e.start, e.text) for e in r.entities] == [(0, "Marie Curie"), (22, "Paris"), (38, "Paris")]
    assert r.meta["ungrounded"] == [["Warsaw", "location"]]
    jsonl = tmp_path / "cot.jsonl"
    jsonl.write_text(json.dumps(rows[0]) + "\n{broken\n")
    with pytest.raises(FormatError, match="cot.jsonl:2"):
        list(read_ner_cot(jsonl, RecordContext("ner_cot", "train")))


def test_prepare_writes_splits_and_stats(tmp_path: Path, data_dir: Path) -> None:
    stats = prepare_dataset("crossner_politics", data_dir, tmp_path)
    assert sorted(p.name for p in (tmp_path / "crossner_politics").iterdir()) == [
        "dev.jsonl", "reference-test.jsonl", "stats.json", "test.jsonl", "train.jsonl"]
    on_disk = json.loads((tmp_path / "crossner_politics" / "stats.json").read_text())
    assert on_disk == stats
    # the reference's evaluation file (InstructUIE test.json) has one sentence fewer than the raw test split
    assert stats["parity"]["sentences"] == 650 and stats["parity"]["gold_dropped_outside_schema"] == 0
    assert stats["splits"]["test"]["sentences"] == 651
    # misc (258 in test) dropped by default
    assert stats["splits"]["test"]["entities"] == 4209 - 258
    assert stats["source_format"] == "native"
    lines = (tmp_path / "crossner_politics" / "test.jsonl").read_text().splitlines()
    assert len(lines) == 651 and json.loads(lines[0])["dataset"] == "crossner_politics"


def test_catalog_covers_the_issue_names() -> None:
    assert set(DATASET_NAMES) == {
        "conll2003", "crossner_ai", "crossner_literature", "crossner_music", "crossner_politics",
        "crossner_science", "mit_movie", "mit_restaurant", "pile_ner",
    }
    assert all(CATALOG[n].instructuie_dir for n in DATASET_NAMES if n != "pile_ner")
