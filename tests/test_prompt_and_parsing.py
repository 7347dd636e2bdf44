"""Prompt rendering, target format and the never-raising answer parser."""

from __future__ import annotations

import json

import pytest

from reasoning_ner.config import PromptConfig
from reasoning_ner.parsing import parse_answer, split_reasoning, structural_chars
from reasoning_ner.prompt import chat_example, chatml, messages, render_answer, render_prompt, render_target
from reasoning_ner.records import Entity, NERRecord


def _record(cot: str | None = "Marie Curie is a person.") -> NERRecord:
    text = "Marie Curie met Pierre Curie in Paris , then Marie Curie left Paris ."
    ents = [Entity(0, 11, "person", "Marie Curie"), Entity(32, 37, "location", "Paris"),
            Entity(16, 28, "person", "Pierre Curie"), Entity(45, 56, "person", "Marie Curie"),
            Entity(62, 67, "location", "Paris")]
    r = NERRecord("r1", text, ents, ["location", "person"], "t", "train", cot=cot)
    r.validate()
    return r


def test_paper_prompt_structure() -> None:
    p = render_prompt("Ada wrote code.", ["person", "organization"], "paper")
    lines = p.splitlines()
    assert lines[0].startswith("You are an information extraction assistant")
    assert lines[2].startswith("1.") and lines[3].startswith("2.")
    assert lines[4] == 'Schema: ["person", "organization"]'
    assert lines[5].startswith("Output format: ") and json.loads(lines[5][len("Output format: "):])["entities"]
    assert lines[6] == "Sentence: Ada wrote code."
    assert p == p.strip()


def test_compact_prompt_and_unknown_style() -> None:
    assert render_prompt("x", ["a b"], "compact") == '["a b"]\nx'
    with pytest.raises(ValueError, match="unknown prompt style"):
        render_prompt("x", [], "fancy")


def test_target_groups_labels_in_first_appearance_order_and_dedupes() -> None:
    r = _record()
    target = render_target(r, PromptConfig(answer_indent=None))
    think, answer = target.split("</think>\n")
    assert think == "<think>\nMarie Curie is a person.\n"
    assert answer == '{"entities": {"person": ["Marie Curie", "Pierre Curie"], "location": ["Paris"]}}'
    # paper layout: pretty JSON with indent 2
    assert render_target(r, PromptConfig()).endswith('"Paris"\n    ]\n  }\n}')


def test_no_cot_ablation_and_empty_answer() -> None:
    r = _record(cot=None)
    assert render_target(r, PromptConfig(with_cot=False, answer_indent=None)).startswith('{"entities"')
    assert render_answer({}, None) == '{"entities": {}}'


def test_chatml_wrapping_matches_the_reference_layout() -> None:
    assert chatml("hi") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert chatml("hi", "yo") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    assert messages("hi", "yo") == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    text = chat_example(_record().to_dict(), PromptConfig(style="compact", answer_indent=None))
    assert text.startswith('<|im_start|>user\n["location", "person"]\nMarie Curie met') and text.endswith("<|im_end|>\n")


def test_parser_round_trips_a_rendered_target() -> None:
    r = _record()
    for cfg in (PromptConfig(), PromptConfig(answer_indent=None), PromptConfig(with_cot=False)):
        res = parse_answer(render_target(r, cfg), r.schema)
        assert res.ok and res.schema_valid()
        assert res.entities == {"person": ["Marie Curie", "Pierre Curie"], "location": ["Paris"]}
    assert parse_answer(render_target(r, PromptConfig())).reasoning == "Marie Curie is a person."


@pytest.mark.parametrize(
    "garbage, error",
    [
        ("", "empty answer"),
        ("I think there are no entities.", "no JSON object"),
        ('{"entities": {"person": ["Ada"', "invalid JSON"),  # truncated mid-answer
        ('<think>still thinking about Ada', "unclosed <think>"),
        ('{"people": ["Ada"]}', "no 'entities' key"),
        ('{"entities": ["Ada"]}', "'entities' is list"),
        ("[1, 2, 3]", "no JSON object"),
        ('{"entities": {"person": [}}', "invalid JSON"),
        (None, "not text"),
        ("\x00\x01<answer></answer>", "empty answer"),
    ],
)
def test_parser_never_raises_on_garbage(garbage, error: str) -> None:
    res = parse_answer(garbage)
    assert not res.ok and error in res.error
    assert res.entities == {}


def test_parser_accepts_answer_tags_fences_and_surrounding_text() -> None:
    expected = {"person": ["Ada"]}
    assert parse_answer('<think>x</think><answer>{"entities": {"person": ["Ada"]}}</answer>').entities == expected
    assert parse_answer('Here:\n```json\n{"entities": {"Person": ["Ada"]}}\n```\nDone.').entities == expected
    assert parse_answer('Sure! {"entities": {"person": ["Ada"]}} hope that helps {').entities == expected
    assert parse_answer('{"entities": {"person": ["Ada"]}} trailing }').entities == expected


def test_parser_keeps_strings_only_and_lowercases_labels() -> None:
    res = parse_answer('{"entities": {"PERSON ": ["Ada", 3, null, "", "Ada"], "Org": "ACME", "loc": []}}')
    assert res.entities == {"person": ["Ada"], "org": ["ACME"]}


def test_labels_outside_the_schema_are_flagged() -> None:
    res = parse_answer('{"entities": {"person": ["Ada"], "weapon": ["sword"]}}', ["person", "location"])
    assert res.ok and res.out_of_schema == ["weapon"] and not res.schema_valid()
    assert ("sword", "weapon") in res.pairs()


def test_split_reasoning_variants() -> None:
    assert split_reasoning("<think>a</think>b") == ("a", "b")
    assert split_reasoning("a</think>b") == ("a", "b")  # template opened the think block
    assert split_reasoning("<think>cut off") == ("cut off", "")
    assert split_reasoning("plain") == ("", "plain")


def test_structural_chars_skip_strings_and_escapes() -> None:
    text = 'x {"a}": "q\\"}{", "b": [1]} y'
    outside = "".join(ch for _, ch in structural_chars(text))
    assert outside == "x {: , : [1]} y"  # braces inside strings, escaped quotes included, are not structure
    assert [i for i, ch in structural_chars(text) if ch in "{}"] == [2, len(text) - 3]
    assert "".join(ch for _, ch in structural_chars(text, start=text.index("["))) == "[1]} y"
