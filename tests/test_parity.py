"""Paper parity: the reference's parser rules one by one, its gold rules, and its F1 on CrossNER-music."""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest

from reasoning_ner.data.catalog import get_spec, iter_split
from reasoning_ner.parity import reference_parse, reference_schema
from reasoning_ner.parsing import parse_answer
from reasoning_ner.records import NERRecord
from reasoning_ner.rewards import f1_reward, schema_reward
from reasoning_ner.scoring import score_predictions

GOOD = '{"entities": {"person": ["Ada"]}}'


@pytest.mark.parametrize(("completion", "reference", "lenient"), [
    # what both read
    (f"<think>ok</think>\n{GOOD}", [("Ada", "person")], [("Ada", "person")]),
    (f"<answer>{GOOD}</answer>", [("Ada", "person")], [("Ada", "person")]),
    (f"<think>x</think>```json\n{GOOD}\n```", [("Ada", "person")], [("Ada", "person")]),
    ('{"entities": {"Person ": [" Ada "]}}', [("Ada", "person")], [(" Ada ", "person")]),  # spans normalized when scored
    # the project's parser forgives, the reference does not
    (f"Sure, here you go: {GOOD}", [], [("Ada", "person")]),            # prose around the JSON
    (f"```\n{GOOD}\n```", [], [("Ada", "person")]),                     # a fence without a language tag
    (f"```JSON\n{GOOD}\n```", [], [("Ada", "person")]),                 # upper-case tag
    (f"{GOOD}\nThat is all.", [], [("Ada", "person")]),                 # trailing text
    ('{"entities": {"person": "Ada"}}', [("A", "person"), ("d", "person"), ("a", "person")], [("Ada", "person")]),
    ('{"entities": {"sports_team": ["Ajax"]}}', [("Ajax", "sports_team")], [("Ajax", "sports team")]),
    # a missing <think> opener: the reasoning stays in front of the JSON for the reference
    (f"reasoning about Ada\n</think>\n{GOOD}", [], [("Ada", "person")]),
    # where the reference itself crashes, both are empty
    ('{"entities": ["Ada"]}', [], []),
    ('{"entities": {"person": 3}}', [], []),
    ('```json\n{"entities": {"person": ["Ada"]}}', [], [("Ada", "person")]),  # unclosed json fence
    ("not json at all", [], []),
    ('{"person": ["Ada"]}', [], []),
])
def test_each_parser_rule(completion: str, reference: list, lenient: list) -> None:
    assert reference_parse(completion).pairs() == reference
    assert parse_answer(completion).pairs() == lenient


def test_reference_keeps_mixed_lists_strings_and_out_of_schema_labels() -> None:
    parsed = reference_parse('{"entities": {"person": ["Ada", 7, null], "misc": ["Euro"]}}', ["person"])
    assert parsed.pairs() == [("Ada", "person"), ("Euro", "misc")] and parsed.ok
    assert parsed.out_of_schema == ["misc"] and not parsed.schema_valid()
    assert reference_schema(["Rating", "else", "Restaurant Name", " MISC "]) == ["rating", "restaurant name"]


def test_the_rewards_use_the_reference_parser_by_default() -> None:
    prose = f"Here: {GOOD}"
    gold = [[["Ada", "person"]]]
    assert f1_reward([prose], gold=gold) == [0.0] and schema_reward([prose], schema=[["person"]]) == [0.0]
    assert f1_reward([prose], gold=gold, parser="lenient") == [1.0]
    assert schema_reward([prose], schema=[["person"]], parser="lenient") == [1.0]
    assert f1_reward([GOOD], gold=gold) == [1.0]
    with pytest.raises(ValueError, match="unknown answer parser"):
        f1_reward([GOOD], gold=gold, parser="loose")


def test_music_gold_follows_the_reference(data_dir: Path) -> None:
    """organisation gold lies outside music's labels.json (organization): dropped, not renamed."""
    records = list(iter_split(get_spec("crossner_music"), "test", data_dir, "reference"))
    pairs = sum(len({(_norm(e.text), e.label) for e in r.entities}) for r in records)
    assert (len(records), pairs) == (465, 2915)
    assert all("organisation" not in r.schema and "organization" in r.schema for r in records)
    native = list(iter_split(get_spec("crossner_music"), "test", data_dir, "native"))
    renamed = sum(len({_norm(e.text) for e in r.entities if e.label == "organization"}) for r in native)
    assert sum(len({(_norm(e.text), e.label) for e in r.entities}) for r in native) > 2915 + 200 and renamed > 200


# ----------------------------------------------------------------------------- the reference's definition


def _norm(text: str) -> str:
    text = "".join(ch for ch in str(text).lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split()).strip()


def _reference_completion_set(completion: str) -> set[tuple[str, str]]:
    """The reference's completion -> set, written from its description (paper notes §5, metric.py)."""
    if "<think>" in completion or "</think>" in completion:
        completion = re.sub("<think>.*?</think>", "", completion, flags=re.S).replace("<think>", "").replace("</think>", "")
    if "<answer>" in completion:
        found = re.findall("<answer>(.*?)</answer>", completion, flags=re.S)
        completion = found[0] if found else completion.replace("<answer>", "").replace("</answer>", "")
    if "```json" in completion:
        found = re.findall("```json(.*?)```", completion, re.S)
        if not found:
            return set()
        completion = found[0]
    try:
        data = json.loads(completion.strip())
    except ValueError:
        return set()
    out = set()
    if isinstance(data, dict):
        for label, spans in data.get("entities", {}).items():
            for span in spans:
                if isinstance(span, str):
                    out.add((_norm(span.strip()), label.lower().strip()))
    return out


def _outputs(records: list[NERRecord]) -> dict[str, str]:
    """Deterministic outputs in every style the two parsers treat differently."""
    outputs = {}
    for i, rec in enumerate(records):
        grouped: dict[str, list[str]] = {}
        for k, e in enumerate(rec.entities):
            if (i + k) % 5 != 4:  # miss some
                label = "organisation" if e.label == "organization" and i % 2 else e.label
                grouped.setdefault(label.replace(" ", "_") if i % 11 == 3 else label, []).append(e.text)
        if i % 13 == 5:
            grouped["misc"] = ["Grammy"]
        answer = json.dumps({"entities": grouped})
        style = i % 7
        outputs[rec.id] = [f"<think>r</think>\n{answer}", f"Answer: {answer}", f"```\n{answer}\n```",
                           f"r\n</think>\n{answer}", f"```json\n{answer}\n```", f"<think>r</think>{answer} done",
                           answer.replace('["', '"', 1).replace('"]', '"', 1)][style]
    return outputs


def test_parity_f1_equals_the_reference_definition_on_music(data_dir: Path) -> None:
    records = list(iter_split(get_spec("crossner_music"), "test", data_dir, "reference"))
    outputs = _outputs(records)
    scored = score_predictions(records, {rid: {"id": rid, "output": out} for rid, out in outputs.items()})
    music = scored["datasets"]["crossner_music"]

    tp = n_pred = n_gold = 0
    for rec in records:
        pred = _reference_completion_set(outputs[rec.id])
        gold = {(_norm(e.text), e.label) for e in rec.entities}
        tp, n_pred, n_gold = tp + len(pred & gold), n_pred + len(pred), n_gold + len(gold)
    p, r = tp / n_pred, tp / n_gold
    assert (music["parity"]["tp"], music["parity"]["pred"], music["parity"]["gold"]) == (tp, n_pred, 2915)
    assert music["parity"]["f1"] == pytest.approx(2 * p * r / (p + r), abs=1e-12)
    # the project's parser credits more of the same outputs
    assert music["paper"]["f1"] > music["parity"]["f1"] + 0.1
