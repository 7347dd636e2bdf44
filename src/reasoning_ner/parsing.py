"""Parse a model's generation into ``{label: [spans]}``; never raises on model garbage.

Steps (the reference's, made explicit): take the reasoning out of ``<think>...</think>`` (kept
separately), prefer the contents of ``<answer>...</answer>``, then of a fenced ```json block,
then the first balanced JSON object in the text; ``json.loads`` it; read ``entities`` as a dict
of label -> list, keeping string items and lower-casing labels. Any failure gives an empty
prediction and a non-empty ``error``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .labels import clean_label

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_STRAY_TAGS = re.compile(r"</?(?:think|answer)>")


@dataclass
class ParseResult:
    entities: dict[str, list[str]] = field(default_factory=dict)
    reasoning: str = ""
    answer_text: str = ""
    error: str | None = None
    #: labels the model produced that are outside the offered schema (only when a schema is given)
    out_of_schema: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def schema_valid(self) -> bool:
        """Valid JSON answer and every label in the schema: the paper's schema reward condition."""
        return self.ok and not self.out_of_schema

    def pairs(self) -> list[tuple[str, str]]:
        return [(span, label) for label, spans in self.entities.items() for span in spans]


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, rest). Handles closed blocks, a missing ``<think>`` (the chat prompt may have
    opened it) and an unclosed one (generation cut off while thinking)."""
    blocks = _THINK_BLOCK.findall(text)
    if blocks:
        return "\n".join(b.strip() for b in blocks), _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        head, _, tail = text.partition("</think>")
        return head.replace("<think>", "").strip(), tail
    if "<think>" in text:
        head, _, tail = text.partition("<think>")
        return tail.strip(), head
    return "", text


def structural_chars(text: str, start: int = 0) -> Iterator[tuple[int, str]]:
    """(index, character) of every character of ``text[start:]`` outside JSON strings (quotes and
    string contents skipped, backslash escapes honoured): the one string-aware scanner that finding an
    answer's object and closing a truncated one both use."""
    in_str = escape = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        else:
            yield i, ch


def _first_json_object(text: str) -> str | None:
    """The first balanced ``{...}`` in text, respecting strings; None if there is none."""
    start = text.find("{")
    while start != -1:
        depth = 0
        for i, ch in structural_chars(text, start):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        start = text.find("{", start + 1)
    return None


def parse_answer(generation: Any, schema: list[str] | None = None) -> ParseResult:
    """Parse one generation; ``schema`` (optional) fills ``out_of_schema``."""
    if not isinstance(generation, str):
        return ParseResult(error=f"generation is {type(generation).__name__}, not text")
    reasoning, rest = split_reasoning(generation)
    result = ParseResult(reasoning=reasoning)
    if (m := _ANSWER_BLOCK.search(rest)) is not None:
        rest = m.group(1)
    if (m := _FENCE.search(rest)) is not None:
        rest = m.group(1)
    rest = _STRAY_TAGS.sub("", rest).strip()
    result.answer_text = rest
    if not rest:
        result.error = "empty answer" if "<think>" not in generation or "</think>" in generation else "unclosed <think> block"
        return result
    candidate = rest if rest.startswith("{") else _first_json_object(rest)
    if candidate is None:
        result.error = "no JSON object in the answer"
        return result
    try:
        obj = json.loads(candidate)
    except json.JSONDecodeError as exc:
        # A complete object may be followed by trailing text; try the first balanced object.
        balanced = _first_json_object(candidate)
        try:
            obj = json.loads(balanced) if balanced else None
        except json.JSONDecodeError:
            obj = None
        if obj is None:
            result.error = f"invalid JSON: {exc.msg} at char {exc.pos}"
            return result
    if not isinstance(obj, dict) or "entities" not in obj:
        result.error = "JSON answer has no 'entities' key"
        return result
    raw = obj["entities"]
    if not isinstance(raw, dict):
        result.error = f"'entities' is {type(raw).__name__}, expected an object of label -> list"
        return result
    entities: dict[str, list[str]] = {}
    for raw_label, spans in raw.items():
        label = clean_label(raw_label)
        items = spans if isinstance(spans, list) else [spans]
        kept = entities.setdefault(label, [])
        for item in items:
            if isinstance(item, str) and item.strip() and item not in kept:
                kept.append(item)
    result.entities = {label: spans for label, spans in entities.items() if spans}
    if schema is not None:
        allowed = {clean_label(s) for s in schema}
        result.out_of_schema = sorted({lbl for lbl in entities if lbl not in allowed})
    return result
