"""Grounding rules and both metrics on hand-computed cases, including the reference's edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasoning_ner.grounding import find_occurrences, ground
from reasoning_ner.metrics import SentenceScore, macro_average, normalize_span, sample_f1, score
from reasoning_ner.records import Entity, NERRecord, RecordError, write_jsonl
from reasoning_ner.scoring import score_files


# ------------------------------------------------------------------------------------ grounding


def test_every_occurrence_on_word_boundaries() -> None:
    text = "Paris loves Paris Hilton; Parisians love Paris."
    assert find_occurrences(text, "Paris") == [(0, 5), (12, 17), (41, 46)]  # not inside "Parisians"
    assert find_occurrences(text, "aris") == []
    assert find_occurrences(text, "aris", word_boundary=False)[0] == (1, 5)


def test_case_insensitive_only_as_fallback() -> None:
    text = "apple and Apple"
    assert find_occurrences(text, "Apple") == [(10, 15)]
    assert find_occurrences(text, "APPLE") == [(0, 5), (10, 15)]


def test_longest_span_wins_but_equal_spans_keep_both_labels() -> None:
    text = "I moved from New York to York ."
    res = ground(text, {"location": ["York", "New York"], "organization": ["New York"]})
    got = [(e.start, e.end, e.label) for e in res.entities]
    assert got == [(13, 21, "location"), (13, 21, "organization"), (25, 29, "location")]


def test_partial_overlaps_are_both_kept() -> None:
    text = "Bank of England Museum"
    res = ground(text, [("Bank of England", "organization"), ("England Museum", "location")])
    assert {(e.start, e.end) for e in res.entities} == {(0, 15), (8, 22)}


def test_ungrounded_spans_are_reported_not_returned() -> None:
    res = ground("Ada met Charles.", {"person": ["Ada", "Grace", " ", ""]})
    assert [e.text for e in res.entities] == ["Ada"]
    assert res.ungrounded == [("Grace", "person"), (" ", "person"), ("", "person")]


def test_punctuation_edges_and_unicode() -> None:
    text = "Le café « Flore » à Paris-Nord."
    assert find_occurrences(text, "« Flore »") == [(8, 17)]
    assert find_occurrences(text, "Paris") == [(20, 25)]  # '-' is a boundary
    assert find_occurrences("STRASSE and straße", "Straße") == [(12, 18)]
    assert find_occurrences("İstanbul", "istanbul") == []  # lower() changes the length: exact match only


# -------------------------------------------------------------------------------------- metrics


def test_squad_normalization() -> None:
    assert normalize_span("The  U.S. Army!") == "us army"
    assert normalize_span("An Apple a day") == "apple day"


def test_paper_metric_hand_computed() -> None:
    sents = [
        SentenceScore(pred_pairs=[("The Beatles", "band"), ("Lennon", "person"), ("lennon", "person")],
                      gold_pairs=[("Beatles", "band"), ("John Lennon", "person")]),
        SentenceScore(pred_pairs=[("Paris", "location")], gold_pairs=[("Paris", "location"), ("France", "country")]),
    ]
    r = score(sents)["paper"]
    # sentence 1: pred {(beatles, band), (lennon, person)} vs gold {(beatles, band), (john lennon, person)}: tp 1
    # sentence 2: tp 1, pred 1, gold 2  -> tp 2, pred 3, gold 4
    assert (r["tp"], r["pred"], r["gold"]) == (2, 3, 4)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(0.5)
    assert r["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert r["per_label"]["person"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "pred": 1, "gold": 1}
    assert r["per_label"]["country"]["gold"] == 1 and r["per_label"]["country"]["recall"] == 0.0


def test_edge_cases_match_the_reference() -> None:
    # empty gold and empty prediction: F1 0 (safe_div), for a sample and for a whole dataset
    assert sample_f1([], []) == 0.0
    assert score([SentenceScore([], [])])["paper"]["f1"] == 0.0
    # empty prediction, non-empty gold: recall 0; empty gold, spurious prediction: precision 0
    assert sample_f1([], [("Ada", "person")]) == 0.0
    assert sample_f1([("Ada", "person")], []) == 0.0
    assert sample_f1([("ada", "person")], [("Ada", "person")]) == 1.0
    # invalid labels are dropped from predictions as from gold
    assert sample_f1([("Ada", "person"), ("Euro", "misc")], [("Ada", "person")]) == 1.0


def test_strict_metric_uses_offsets() -> None:
    s = SentenceScore(
        pred_pairs=[("Paris", "location")], gold_pairs=[("Paris", "location")],
        pred_offsets=[(0, 5, "location")], gold_offsets=[(0, 5, "location"), (20, 25, "location")],
    )
    r = score([s])
    assert r["paper"]["f1"] == 1.0  # string sets collapse the two mentions
    assert r["strict"]["recall"] == 0.5 and r["strict"]["precision"] == 1.0


def test_macro_average() -> None:
    assert macro_average({"a": 0.5, "b": 0.7}) == pytest.approx(0.6)
    assert macro_average({}) == 0.0


# -------------------------------------------------------------------------------------- scoring


def _gold(tmp_path: Path) -> Path:
    recs = [
        NERRecord("a", "Ada met Charles in London .", [Entity(0, 3, "person", "Ada"), Entity(8, 15, "person", "Charles"),
                  Entity(19, 25, "location", "London")], ["location", "person"], "ds1", "test"),
        NERRecord("b", "Nothing here .", [], ["location", "person"], "ds1", "test"),
        NERRecord("c", "ACME hired Bob .", [Entity(0, 4, "organization", "ACME")], ["organization"], "ds2", "test"),
    ]
    path = tmp_path / "gold.jsonl"
    write_jsonl(path, recs)
    return path


def test_score_files_with_raw_outputs_and_canonical_predictions(tmp_path: Path) -> None:
    gold = _gold(tmp_path)
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(json.dumps(o) for o in [
        {"id": "a", "output": '<think>Ada, Charles.</think>{"entities": {"person": ["Ada", "Charles", "Babbage"]}}'},
        {"id": "b", "output": "garbage"},
        {"id": "c", "entities": [{"start": 11, "end": 14, "label": "organization", "text": "Bob"}]},
    ]) + "\n")
    rep = score_files(gold, pred)
    ds1, ds2 = rep["datasets"]["ds1"], rep["datasets"]["ds2"]
    # ds1 paper: pred {ada, charles, babbage} vs gold {ada, charles, london}: tp 2, pred 3, gold 3
    assert (ds1["paper"]["tp"], ds1["paper"]["pred"], ds1["paper"]["gold"]) == (2, 3, 3)
    assert ds1["strict"]["tp"] == 2 and ds1["strict"]["pred"] == 2  # Babbage is ungrounded
    assert ds1["parse_rate"] == 0.5 and ds1["ungrounded_rate"] == pytest.approx(1 / 3)
    assert ds2["paper"]["f1"] == 0.0
    assert rep["macro"]["paper_f1"] == pytest.approx(ds1["paper"]["f1"] / 2)
    assert ds1["source_format"] == "native"


def test_missing_predictions_count_as_empty(tmp_path: Path) -> None:
    gold = _gold(tmp_path)
    pred = tmp_path / "pred.jsonl"
    pred.write_text(json.dumps({"id": "c", "output": '{"entities": {"organization": ["ACME"]}}'}) + "\n")
    rep = score_files(gold, pred)
    assert rep["datasets"]["ds1"]["missing_predictions"] == 2
    assert rep["datasets"]["ds1"]["paper"]["recall"] == 0.0
    assert rep["datasets"]["ds2"]["paper"]["f1"] == 1.0


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"id": "zzz", "output": "x"}'], "not in the gold file"),
        (['{"output": "x"}'], "has no 'id'"),
        (['{"id": "a", "output": "x"}', '{"id": "a", "output": "y"}'], "appears twice"),
        (['{"id": "a"}'], "needs 'output'"),
        (['{"id": "a",'], r"pred.jsonl:1: not valid JSON \(Expecting property name enclosed in double quotes at column 12\)"),
    ],
)
def test_bad_prediction_files_name_the_problem(tmp_path: Path, lines: list[str], message: str) -> None:
    gold = _gold(tmp_path)
    pred = tmp_path / "pred.jsonl"
    pred.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=message):
        score_files(gold, pred)


def test_record_validation_names_the_field() -> None:
    with pytest.raises(RecordError, match=r"entities\[0\] text 'Ada' != text\[1:4\] 'da '"):
        NERRecord("x", "Ada lives", [Entity(1, 4, "person", "Ada")], [], "d", "s").validate()
    with pytest.raises(RecordError, match=r"entities\[0\] offsets \[1, 9\) out of range"):
        NERRecord("x", "Ada", [Entity(1, 9, "person", "Ada")], [], "d", "s").validate()
    with pytest.raises(RecordError, match="missing field"):
        NERRecord.from_dict({"id": "x"})
