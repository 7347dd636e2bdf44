"""Readers for every raw NER format we meet, each yielding canonical :class:`NERRecord` objects.

Token-level formats (CoNLL, CrossNER, MIT, GLiNER) are detokenized by joining tokens with one
space, exactly as the InstructUIE JSON copies were built; offsets are computed while joining, so
``text[start:end] == entity.text`` holds by construction (and is checked by ``record.validate``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..grounding import find_occurrences
from ..labels import is_valid_label, make_schema, map_label
from ..records import Entity, NERRecord, RecordError


class FormatError(ValueError):
    """Raw input that does not follow its format; the message names the file and line."""


@dataclass
class RecordContext:
    """What every reader needs to know to build canonical records."""

    dataset: str
    split: str
    label_map: dict[str, str] | None = None
    schema: list[str] | None = None  # fixed dataset-level schema; None = per-record schema
    keep_invalid: bool = False
    source_format: str = "native"

    def make_id(self, index: int | str) -> str:
        return f"{self.dataset}-{self.split}-{index:06d}" if isinstance(index, int) else f"{self.dataset}-{self.split}-{index}"

    def keep(self, label: str) -> bool:
        return label != "" and (self.keep_invalid or is_valid_label(label))


def _finish(ctx: RecordContext, rec_id: str, text: str, entities: list[Entity], schema: list[str], **kw: Any) -> NERRecord:
    kept = sorted({e for e in entities if ctx.keep(e.label)})
    record = NERRecord(
        id=rec_id,
        text=text,
        entities=kept,
        schema=schema,
        dataset=ctx.dataset,
        split=ctx.split,
        source_format=ctx.source_format,
        **kw,
    )
    record.validate()
    return record


# --------------------------------------------------------------------------------------------
# BIO token formats
# --------------------------------------------------------------------------------------------


def bio_to_record(ctx: RecordContext, index: int, tokens: list[str], tags: list[str], where: str) -> NERRecord:
    """Join tokens with single spaces and turn IOB2 (or IOB1) tags into character spans."""
    starts: list[int] = []
    pos = 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok) + 1
    text = " ".join(tokens)

    entities: list[Entity] = []
    current: tuple[int, int, str] | None = None  # (first token, last token, raw type)

    def close() -> None:
        nonlocal current
        if current is not None:
            first, last, raw_type = current
            s, e = starts[first], starts[last] + len(tokens[last])
            entities.append(Entity(s, e, map_label(raw_type, ctx.label_map), text[s:e]))
            current = None

    for i, tag in enumerate(tags):
        if tag == "O":
            close()
            continue
        prefix, sep, raw_type = tag.partition("-")
        if not sep or prefix not in ("B", "I") or not raw_type:
            raise FormatError(f"{where}: token {i} has tag {tag!r}; expected O, B-<type> or I-<type>")
        # An I- that does not continue an open span of the same type starts one (IOB1 tolerance).
        if prefix == "B" or current is None or current[2] != raw_type:
            close()
            current = (i, i, raw_type)
        else:
            current = (current[0], i, raw_type)
    close()
    schema = ctx.schema if ctx.schema is not None else make_schema({e.label for e in entities}, ctx.keep_invalid)
    return _finish(ctx, ctx.make_id(index), text, entities, schema)


def read_bio_file(
    path: Path, ctx: RecordContext, token_col: int, tag_col: int, sep: str | None, skip_docstart: bool = False
) -> Iterator[NERRecord]:
    """Column files with a blank line between sentences (CoNLL-2003, CrossNER, MIT)."""
    tokens: list[str] = []
    tags: list[str] = []
    index = 0
    start_line = 1
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\n").rstrip("\r")
            if not line.strip():
                if tokens:
                    yield bio_to_record(ctx, index, tokens, tags, f"{path}:{start_line}")
                    index += 1
                    tokens, tags = [], []
                start_line = lineno + 1
                continue
            cols = line.split(sep) if sep else line.split()
            if len(cols) <= max(token_col, tag_col):
                raise FormatError(f"{path}:{lineno}: expected at least {max(token_col, tag_col) + 1} columns, got {line!r}")
            token, tag = cols[token_col], cols[tag_col].strip()
            if skip_docstart and token == "-DOCSTART-":
                continue
            if not tokens:
                start_line = lineno
            tokens.append(token)
            tags.append(tag)
    if tokens:
        yield bio_to_record(ctx, index, tokens, tags, f"{path}:{start_line}")


def read_conll2003(path: Path, ctx: RecordContext) -> Iterator[NERRecord]:
    """CoNLL-2003: ``token POS chunk NER`` separated by spaces; ``-DOCSTART-`` lines skipped."""
    return read_bio_file(path, ctx, token_col=0, tag_col=3, sep=" ", skip_docstart=True)


def read_crossner(path: Path, ctx: RecordContext) -> Iterator[NERRecord]:
    """CrossNER: ``token<TAB>tag``."""
    return read_bio_file(path, ctx, token_col=0, tag_col=1, sep="\t")


def read_mit(path: Path, ctx: RecordContext) -> Iterator[NERRecord]:
    """MIT Movie/Restaurant ``.bio``: tag first, ``tag<TAB>token``."""
    return read_bio_file(path, ctx, token_col=1, tag_col=0, sep="\t")


# --------------------------------------------------------------------------------------------
# JSON formats
# --------------------------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def read_instructuie(path: Path, ctx: RecordContext, label_of: Callable[[str], str] | None = None) -> Iterator[NERRecord]:
    """InstructUIE ``IE_INSTRUCTIONS`` JSON: ``[{sentence, entities: [{name, type, pos}]}]``.

    Types go through the context's label map unless ``label_of`` is given (parity mode reads
    them as the reference does).
    """
    label_of = label_of or (lambda raw: map_label(raw, ctx.label_map))
    rows = _load_json(path)
    if not isinstance(rows, list):
        raise FormatError(f"{path}: expected a JSON list of records")
    for index, row in enumerate(rows):
        try:
            text = row["sentence"]
            entities = [
                Entity(int(e["pos"][0]), int(e["pos"][1]), label_of(e["type"]), e["name"])
                for e in row["entities"]
            ]
        except (KeyError, TypeError, IndexError) as exc:
            raise FormatError(f"{path}: record {index} lacks sentence/entities[name,type,pos] ({exc})") from exc
        schema = ctx.schema if ctx.schema is not None else make_schema({e.label for e in entities}, ctx.keep_invalid)
        try:
            yield _finish(ctx, ctx.make_id(index), text, entities, schema)
        except RecordError as exc:
            raise FormatError(f"{path}: {exc}") from exc


def read_slimer_pile_ner(path: Path, ctx: RecordContext) -> Iterator[NERRecord]:
    """SLIMER Pile-NER JSONL: one row per (passage, type); regrouped into one multi-type record.

    The schema of a passage is every type asked about it, including the negative (empty) ones,
    which is how Pile-NER's negative sampling reaches the model. Mention strings are grounded to
    every word-boundary occurrence (:func:`find_occurrences`).
    """
    passages: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = str(row["doc_question_pairID"]).split(":")[0]
                passage, tag = row["input"], row["tagName"]
                mentions = json.loads(row["output"]) if isinstance(row["output"], str) else row["output"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise FormatError(f"{path}:{lineno}: not a SLIMER row ({exc})") from exc
            entry = passages.setdefault(doc_id, {"text": passage, "types": [], "mentions": []})
            if entry["text"] != passage:
                raise FormatError(f"{path}:{lineno}: passage {doc_id} appears with two different texts")
            label = map_label(tag, ctx.label_map)
            entry["types"].append(label)
            entry["mentions"].extend((str(m), label) for m in mentions)
    for doc_id, entry in passages.items():
        yield grounded_record(ctx, ctx.make_id(doc_id), entry["text"], entry["mentions"], entry["types"], {"doc_id": doc_id})


def read_gliner(path: Path, ctx: RecordContext) -> Iterator[NERRecord]:
    """GLiNER JSON: ``[{tokenized_text, ner: [[first_tok, last_tok_inclusive, type], ...]}]``."""
    rows = _load_json(path)
    if not isinstance(rows, list):
        raise FormatError(f"{path}: expected a JSON list")
    for index, row in enumerate(rows):
        try:
            tokens = [str(t) for t in row["tokenized_text"]]
            spans = [(int(a), int(b), str(t)) for a, b, t in row["ner"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: record {index} lacks tokenized_text/ner ({exc})") from exc
        starts, pos = [], 0
        for tok in tokens:
            starts.append(pos)
            pos += len(tok) + 1
        text = " ".join(tokens)
        entities = []
        for a, b, raw in spans:
            if not (0 <= a <= b < len(tokens)):
                raise FormatError(f"{path}: record {index} has token span [{a}, {b}] outside {len(tokens)} tokens")
            s, e = starts[a], starts[b] + len(tokens[b])
            entities.append(Entity(s, e, map_label(raw, ctx.label_map), text[s:e]))
        schema = make_schema({e.label for e in entities}, ctx.keep_invalid)
        yield _finish(ctx, ctx.make_id(index), text, entities, schema)


def read_ner_cot(path: Path, ctx: RecordContext) -> Iterator[NERRecord]:
    """ReasoningIE / NER-CoT JSON (list) or JSONL: ``{guid?, sentence, schema, cot, entities[{text,label}]}``."""
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise FormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    else:
        rows = _load_json(path)
        if not isinstance(rows, list):
            raise FormatError(f"{path}: expected a JSON list of NER-CoT records")
    for index, row in enumerate(rows):
        yield ner_cot_row_to_record(row, ctx, index, str(path))


def ner_cot_row_to_record(row: dict[str, Any], ctx: RecordContext, index: int, where: str = "row") -> NERRecord:
    try:
        text = row["sentence"]
        schema_raw = row.get("schema") or []
        mentions = [(str(e["text"]), map_label(e["label"], ctx.label_map)) for e in row.get("entities") or []]
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{where}: record {index} lacks sentence/entities[text,label] ({exc})") from exc
    rec_id = ctx.make_id(str(row["guid"])) if row.get("guid") is not None else ctx.make_id(index)
    types = [map_label(s, ctx.label_map) for s in schema_raw] + [label for _, label in mentions]
    return grounded_record(ctx, rec_id, text, mentions, types, {}, cot=row.get("cot"))


def grounded_record(
    ctx: RecordContext,
    rec_id: str,
    text: str,
    mentions: list[tuple[str, str]],
    types: list[str],
    meta: dict[str, Any],
    cot: str | None = None,
) -> NERRecord:
    """Build a record from (mention string, label) pairs by grounding each string in the text."""
    entities: list[Entity] = []
    ungrounded: list[list[str]] = []
    for span, label in mentions:
        # Gold annotations may mark part of a word ("Bank" in "Banks"): fall back to any substring.
        occurrences = find_occurrences(text, span) or find_occurrences(text, span, word_boundary=False)
        if not occurrences:
            ungrounded.append([span, label])
        entities.extend(Entity(s, e, label, text[s:e]) for s, e in occurrences)
    meta = dict(meta)
    meta["mentions"] = sum(1 for _, label in mentions if ctx.keep(label))
    if ungrounded:
        meta["ungrounded"] = ungrounded
    schema = make_schema(types, ctx.keep_invalid)
    return _finish(ctx, rec_id, text, entities, schema, cot=cot, meta=meta)
