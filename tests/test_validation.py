"""The Great Expectations dataset gate on real prepared data and on hand-made corruptions.

Each corruption changes one record of a clean set built from real CrossNER politics records and
must fail exactly its named expectation (and nothing else), naming the corrupted record.
Corruption runs skip Data Docs (the HTML build is the slow part); the docs tests build them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reasoning_ner.config import Config
from reasoning_ner.records import RecordError, read_jsonl, write_jsonl
from reasoning_ner.validation import find_eval_files, format_report, validate_dataset

POLITICS = "crossner_politics"
#: every configured zero-shot set except the one the clean data come from
OTHER_ZERO_SHOT = [d for d in Config().data.zero_shot_datasets if d != POLITICS]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """CrossNER politics and science, prepared from the shared data (well under a second)."""
    from reasoning_ner.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("val-prepared")
    for name in (POLITICS, "crossner_science"):
        prepare_dataset(name, data_dir, out)
    return out


@pytest.fixture(scope="module")
def clean_set(prepared: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """12 real politics training records with a chain each, and 5 real politics test records."""
    train = [r for r in read_jsonl(prepared / POLITICS / "train.jsonl") if r["entities"]][:12]
    for r in train:
        r["cot"] = f"The schema offers {len(r['schema'])} types; the sentence names {len(r['entities'])} entities."
        r["meta"] = {"teacher": "offline"}
    evals = list(read_jsonl(prepared / POLITICS / "test.jsonl"))[:5]
    return train, evals


def run_gate(tmp: Path, train: list[dict], evals: list[dict], kind: str = "ner", **kw: Any):
    write_jsonl(tmp / "train.jsonl", train)
    write_jsonl(tmp / "test.jsonl", evals)
    kw.setdefault("data_docs", False)
    return validate_dataset([tmp / "train.jsonl"], [tmp / "test.jsonl"], kind, kw.pop("zero_shot", OTHER_ZERO_SHOT),
                            tmp / "out", **kw)


# ------------------------------------------------------------------------------ real data


@pytest.fixture(scope="module")
def clean_report(prepared: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("val-clean")
    report = validate_dataset(
        [prepared / POLITICS / "train.jsonl"],
        [prepared / POLITICS / "dev.jsonl", prepared / POLITICS / "test.jsonl"],
        "ner", OTHER_ZERO_SHOT, out,
    )
    return report, out


def test_clean_prepared_dataset_passes(clean_report, prepared: Path) -> None:
    report, out = clean_report
    assert report.success, format_report(report)
    assert report.failed == []
    assert all(e["success"] for e in report.expectations) and len(report.expectations) == 16
    stats = json.loads((prepared / POLITICS / "stats.json").read_text())["splits"]
    assert report.statistics["train_records"] == stats["train"]["sentences"]
    assert report.statistics["eval_records"] == stats["dev"]["sentences"] + stats["test"]["sentences"]
    assert report.statistics["entities"] == sum(s["entities"] for s in stats.values())
    summary = json.loads((out / "validation.json").read_text())
    assert summary["success"] is True and summary["statistics"]["unsuccessful_expectations"] == 0
    assert "PASSED" in format_report(report)


def test_data_docs_html_is_built(clean_report) -> None:
    report, out = clean_report
    index = Path(report.data_docs_index)
    assert index == out / "data_docs" / "index.html"
    assert index.is_file() and index.stat().st_size > 1000
    pages = list((out / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 3  # one per suite: records, entities, training
    assert "entity_offsets_match_text" in "".join(p.read_text() for p in pages)


def test_real_zero_shot_training_and_cross_dataset_leakage(prepared: Path, tmp_path: Path) -> None:
    # politics train vs science test: one real shared sentence (science test 313); with the
    # configured zero-shot list, every politics training record is also refused.
    report = validate_dataset(
        [prepared / POLITICS / "train.jsonl"],
        [prepared / POLITICS / "test.jsonl", prepared / "crossner_science" / "test.jsonl"],
        "ner", Config().data.zero_shot_datasets, tmp_path, data_docs=False,
    )
    assert not report.success
    assert sorted(report.failed_names) == ["no_train_eval_leakage", "no_zero_shot_datasets_in_training"]
    failed = {f.name: f for f in report.failed}
    assert failed["no_zero_shot_datasets_in_training"].unexpected_count == 200
    assert failed["no_zero_shot_datasets_in_training"].examples[0]["value"] == POLITICS
    leak = failed["no_train_eval_leakage"]
    assert leak.unexpected_count == 1
    assert leak.examples[0]["id"] == "crossner_politics-train-000175"
    assert "crossner_science-test-000313" in leak.examples[0]["value"]


# ------------------------------------------------------------------------------ corruptions


def _first_entity(rec: dict) -> dict:
    return next(e for e in rec["entities"] if e["end"] - e["start"] > 1)


def _set(rec: dict, **values: Any) -> None:
    rec.update(values)


Mutation = Callable[[list[dict], list[dict]], None]

# (case, kind, mutation, expected failing expectation, record index in train, text in the example value)
CORRUPTIONS: list[tuple[str, str, Mutation, str, int, str]] = [
    ("missing_text", "ner", lambda t, e: t[1].pop("text"), "text_present", 1, "<missing>"),
    ("missing_schema", "ner", lambda t, e: t[1].pop("schema"), "schema_present", 1, "<missing>"),
    ("entities_not_a_list", "ner", lambda t, e: _set(t[2], entities="United Russia"), "record_field_types", 2,
     "entities is str, expected list"),
    ("start_not_an_int", "ner", lambda t, e: _set(_first_entity(t[2]), start=str(_first_entity(t[2])["start"])),
     "entity_field_types", 2, "start is str, expected int"),
    ("empty_text", "ner", lambda t, e: _set(t[3], text="   ", entities=[]), "text_nonempty", 3, "'   '"),
    ("offset_out_of_range", "ner", lambda t, e: _set(_first_entity(t[4]), end=len(t[4]["text"]) + 3),
     "entity_offsets_in_range", 4, "outside text of length"),
    ("offset_off_by_one", "ner", lambda t, e: _set(_first_entity(t[5]), start=_first_entity(t[5])["start"] + 1),
     "entity_offsets_match_text", 5, "!= text["),
    ("label_outside_schema", "ner", lambda t, e: _set(_first_entity(t[6]), label="spaceship"),
     "entity_label_in_schema", 6, "'spaceship' not in schema"),
    ("leakage", "ner", lambda t, e: _set(t[10], text="  " + " \t ".join(e[2]["text"].upper().split()), entities=[]),
     "no_train_eval_leakage", 10, "crossner_politics-test-000002"),
    ("zero_shot_dataset", "ner", lambda t, e: _set(t[11], dataset="crossner_ai"),
     "no_zero_shot_datasets_in_training", 11, "crossner_ai"),
    ("cot_missing", "cot", lambda t, e: t[8].pop("cot"), "cot_present", 8, "<missing>"),
    ("cot_empty", "cot", lambda t, e: _set(t[8], cot=" \n "), "cot_present", 8, "' \\n '"),
    ("cot_too_long", "cot", lambda t, e: _set(t[9], cot="word " * 51), "cot_word_count_in_bounds", 9, "51"),
    ("cot_too_short", "cot", lambda t, e: _set(t[9], cot="person: none"), "cot_word_count_in_bounds", 9, "2"),
    ("think_tags_in_cot", "cot", lambda t, e: _set(t[7], cot=f"<think>{t[7]['cot']}</think>"),
     "cot_no_think_tags", 7, "<think>"),
    ("teacher_not_a_string", "cot", lambda t, e: _set(t[7], meta={"teacher": 7}), "record_field_types", 7,
     "meta.teacher"),
]


@pytest.mark.parametrize("kind", ["ner", "cot"])
def test_clean_hand_built_set_passes(clean_set, tmp_path: Path, kind: str) -> None:
    train, evals = copy.deepcopy(clean_set)
    report = run_gate(tmp_path, train, evals, kind, min_chain_words=3, max_chain_words=50)
    assert report.success, format_report(report)
    assert len(report.expectations) == (19 if kind == "cot" else 16)


@pytest.mark.parametrize(("case", "kind", "mutate", "expected", "index", "shown"), CORRUPTIONS,
                         ids=[c[0] for c in CORRUPTIONS])
def test_corruption_fails_only_its_named_expectation(
    clean_set, tmp_path: Path, case: str, kind: str, mutate: Mutation, expected: str, index: int, shown: str
) -> None:
    train, evals = copy.deepcopy(clean_set)
    bad_id = train[index]["id"]
    mutate(train, evals)
    report = run_gate(tmp_path, train, evals, kind, min_chain_words=3, max_chain_words=50)
    assert not report.success
    assert report.failed_names == [expected], format_report(report)
    (failed,) = report.failed
    assert failed.unexpected_count == 1
    assert [ex["id"] for ex in failed.examples] == [bad_id]
    assert shown in failed.examples[0]["value"]


def test_duplicate_ids_fail_ids_unique(clean_set, tmp_path: Path) -> None:
    train, evals = copy.deepcopy(clean_set)
    train[7]["id"] = train[6]["id"]
    report = run_gate(tmp_path, train, evals)
    assert report.failed_names == ["ids_unique"], format_report(report)
    assert report.failed[0].unexpected_count == 2
    assert [(ex["id"], ex["line"]) for ex in report.failed[0].examples] == [(train[6]["id"], 7), (train[6]["id"], 8)]


def test_empty_training_file_fails(clean_set, tmp_path: Path) -> None:
    report = run_gate(tmp_path, [], clean_set[1])
    assert report.failed_names == ["training_data_nonempty"], format_report(report)
    assert report.failed[0].observed_value == 0


def test_report_json_and_text_name_the_failure(clean_set, tmp_path: Path) -> None:
    train, evals = copy.deepcopy(clean_set)
    ent = _first_entity(train[5])
    ent["start"] += 1
    report = run_gate(tmp_path, train, evals, data_docs=True)
    summary = json.loads((tmp_path / "out" / "validation.json").read_text())
    assert summary["success"] is False
    assert [f["name"] for f in summary["failed"]] == ["entity_offsets_match_text"]
    assert summary["failed"][0]["expectation_type"] == "expect_column_values_to_be_null"
    assert summary["failed"][0]["examples"][0]["id"] == train[5]["id"]
    assert summary["data_docs_index"] == str(tmp_path / "out" / "data_docs" / "index.html")
    text = format_report(report)
    assert "FAILED entity_offsets_match_text" in text
    assert f"id={train[5]['id']}" in text and "train.jsonl:6 entities[" in text
    assert "FAILED - 15/16" in text
    # The failing row's problem is what Data Docs shows as the unexpected value.
    pages = "".join(p.read_text() for p in (tmp_path / "out" / "data_docs" / "validations").rglob("*.html"))
    assert f"!= text[{ent['start']}:{ent['end']}]" in pages.replace("&#39;", "'")
    # A rerun into the same folder replaces the site instead of listing both runs.
    rerun = run_gate(tmp_path, *copy.deepcopy(clean_set), data_docs=True)
    assert rerun.success
    pages = list((tmp_path / "out" / "data_docs" / "validations").rglob("*.html"))
    assert len(pages) == 3 and "!= text[" not in "".join(p.read_text() for p in pages)


# ------------------------------------------------------------------------------ inputs


def test_missing_input_file_is_named(clean_set, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", clean_set[0])
    with pytest.raises(RecordError, match="nope.jsonl: input file does not exist"):
        validate_dataset([tmp_path / "train.jsonl"], [tmp_path / "nope.jsonl"], "ner", [], tmp_path / "out")


def test_non_jsonl_input_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "table.csv"
    bad.write_text("id,text\n1,Obama\n")
    with pytest.raises(RecordError, match="table.csv:1: not valid JSON"):
        validate_dataset([bad], [], "ner", [], tmp_path / "out")


def test_find_eval_files_picks_dev_and_test(prepared: Path, tmp_path: Path) -> None:
    found = {(p.parent.name, p.name) for p in find_eval_files(prepared)}
    assert found == {(d, s) for d in (POLITICS, "crossner_science") for s in ("dev.jsonl", "test.jsonl")}
    with pytest.raises(RecordError, match="no \\*/test.jsonl"):
        find_eval_files(tmp_path)
