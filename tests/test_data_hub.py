"""Hub loading: the row converters on hand-written rows; the download itself needs the network."""

from __future__ import annotations

import json

import pytest

from reasoning_ner.data.formats import FormatError, RecordContext
from reasoning_ner.data.hub import bio_row_to_record, iter_hub_split, pile_ner_row_to_record
from reasoning_ner.labels import CONLL2003_LABELS


def test_bio_row_with_classlabel_ids() -> None:
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    ctx = RecordContext("conll2003", "train", CONLL2003_LABELS, ["location", "organization", "person"])
    r = bio_row_to_record({"tokens": ["Ada", "Lovelace", "visited", "Euro", "Disney"], "ner_tags": [1, 2, 0, 7, 8]}, names, ctx, 0)
    assert [(e.text, e.label) for e in r.entities] == [("Ada Lovelace", "person")]  # MISC dropped
    with pytest.raises(FormatError, match="hub row 3"):
        bio_row_to_record({"tokens": ["a"], "ner_tags": [99]}, names, ctx, 3)


def test_pile_ner_conversation_row() -> None:
    row = {
        "id": "p7",
        "conversations": [
            {"from": "human", "value": "Text: Grace Hopper joined the Navy in 1943."},
            {"from": "gpt", "value": "I've read this text."},
            {"from": "human", "value": "What describes person in the text?"},
            {"from": "gpt", "value": json.dumps(["Grace Hopper"])},
            {"from": "human", "value": "What describes Military Branch in the text?"},
            {"from": "gpt", "value": json.dumps(["Navy"])},
            {"from": "human", "value": "What describes city in the text?"},
            {"from": "gpt", "value": "[]"},
        ],
    }
    r = pile_ner_row_to_record(row, RecordContext("pile_ner", "train"), 0)
    assert r.id == "pile_ner-train-p7"
    assert r.text == "Grace Hopper joined the Navy in 1943."
    assert r.schema == ["city", "military branch", "person"]  # the negative type stays in the schema
    assert [(e.text, e.label) for e in r.entities] == [("Grace Hopper", "person"), ("Navy", "military branch")]
    with pytest.raises(FormatError, match="does not start with 'Text: ...'"):
        pile_ner_row_to_record({"conversations": [{"value": "hello"}]}, RecordContext("pile_ner", "train"), 1)


def test_unknown_hub_dataset_is_explained() -> None:
    with pytest.raises(ValueError, match="no known Hub copy"):
        next(iter_hub_split("mit_movie", "train"))

