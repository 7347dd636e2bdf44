"""Load datasets from the Hugging Face Hub by name, for users with internet access.

Same canonical records as the file readers. Row converters are plain functions (tested here on
hand-written rows); :func:`iter_hub_split` only adds the ``datasets.load_dataset`` call, which
needs the network and honours ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from ..labels import map_label
from .catalog import get_spec
from .formats import FormatError, RecordContext, bio_to_record, grounded_record, ner_cot_row_to_record

NER_COT_REPO = "HuiHuang/NER-CoT"

_PILE_TEXT = re.compile(r"^Text:\s*", re.DOTALL)
_PILE_QUESTION = re.compile(r"^What describes (.+?) in the text\?$")


def bio_row_to_record(row: dict[str, Any], tag_names: list[str], ctx: RecordContext, index: int) -> Any:
    """A ``{tokens, ner_tags}`` row whose tags are ClassLabel ids (conll2003, cross_ner)."""
    try:
        tokens = [str(t) for t in row["tokens"]]
        tags = [tag_names[int(t)] for t in row["ner_tags"]]
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise FormatError(f"hub row {index}: expected tokens + ner_tags ids ({exc})") from exc
    return bio_to_record(ctx, index, tokens, tags, f"hub row {index}")


def pile_ner_row_to_record(row: dict[str, Any], ctx: RecordContext, index: int) -> Any:
    """A Pile-NER-type conversation: "Text: ..." then one question per type with a JSON list answer."""
    turns = row.get("conversations") or []
    if not turns or not _PILE_TEXT.match(str(turns[0].get("value", ""))):
        raise FormatError(f"hub row {index}: Pile-NER conversation does not start with 'Text: ...'")
    text = _PILE_TEXT.sub("", turns[0]["value"], count=1)
    types: list[str] = []
    mentions: list[tuple[str, str]] = []
    for question, answer in zip(turns[2::2], turns[3::2]):
        m = _PILE_QUESTION.match(str(question.get("value", "")).strip())
        if not m:
            continue
        label = m.group(1)
        types.append(label)
        try:
            spans = json.loads(answer.get("value", "[]"))
        except json.JSONDecodeError:
            spans = []
        mentions.extend((str(s), label) for s in spans if isinstance(s, str))
    types = [map_label(t) for t in types]
    mentions = [(s, map_label(lbl)) for s, lbl in mentions]
    return grounded_record(ctx, ctx.make_id(str(row.get("id", index))), text, mentions, types, {})


def iter_hub_split(name: str, split: str, keep_invalid: bool = False, repo: str | None = None) -> Iterator[Any]:
    """Canonical records of ``name`` (a catalog dataset or ``ner_cot``) from the Hub."""
    import datasets  # heavy; only needed here

    if name == "ner_cot":
        ds = datasets.load_dataset(repo or NER_COT_REPO, split=split)
        ctx = RecordContext("ner_cot", split, None, None, keep_invalid, "hub")
        for i, row in enumerate(ds):
            yield ner_cot_row_to_record(row, ctx, i, f"{repo or NER_COT_REPO}:{split}")
        return
    spec = get_spec(name)
    if not spec.hub and repo is None:
        raise ValueError(f"dataset {name} has no known Hub copy; pass a repo id with tokens + ner_tags columns")
    hub_repo = repo or spec.hub["repo"]
    kind = spec.hub.get("kind", "bio")
    ds = datasets.load_dataset(hub_repo, spec.hub.get("config"), split=split)
    ctx = RecordContext(spec.name, split, spec.label_map, spec.schema(keep_invalid), keep_invalid, "hub")
    if kind == "pile_ner_conversations":
        for i, row in enumerate(ds):
            yield pile_ner_row_to_record(row, ctx, i)
    else:
        tag_names = ds.features["ner_tags"].feature.names
        for i, row in enumerate(ds):
            yield bio_row_to_record(row, tag_names, ctx, i)
