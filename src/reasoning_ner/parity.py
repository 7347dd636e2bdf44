"""Paper parity: the reference's own answer parser, label rules and set F1 (HuiResearch/ReasoningIE).

The project's parser (:func:`reasoning_ner.parsing.parse_answer`) forgives what a served model
gets slightly wrong: prose around the JSON, a fence without a language tag, a missing ``<think>``
opener, a bare string instead of a list, ``_`` in a label. The reference forgives none of it, so
its F1 (the numbers of the paper's Table 1) is lower on the same outputs. Parity mode scores as
the reference does, written from its ``rner/utils.py``, ``rner/protocol.py`` and ``rner/metric.py``:

* answer text: every ``<think>...</think>`` block removed, then any stray ``<think>``/``</think>``;
  the inside of the first closed ``<answer>...</answer>`` (tags dropped when none is closed); the
  inside of the first closed `````json`` fence (lower-case ``json`` only); stripped;
* ``json.loads`` of that whole text; anything but an object is an empty prediction, as is an
  object without ``entities``;
* each ``label -> spans`` item: the label lower-cased and stripped (``_`` stays), every *string*
  the spans value yields when iterated (a list's strings, a bare string's characters, an object's
  keys), stripped; predicted labels are never filtered (misc, or a label outside the schema, is a
  false positive);
* gold: the InstructUIE ``test.json`` entities whose lower-cased type is valid and in the
  dataset's ``labels.json`` (lower-cased, invalid labels removed), no renaming (CrossNER-music's
  ``organisation`` gold is outside its ``organization`` schema and dropped:
  :func:`reasoning_ner.data.catalog.iter_split` with ``source_format="reference"``);
* per sentence the sets of (SQuAD-normalized span, label); micro P/R/F1 per dataset.

Where the reference crashes (``entities`` that is not an object, a spans value that cannot be
iterated, an unclosed `````json`` fence) the prediction here is empty with an error saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from .labels import INVALID_LABELS
from .metrics import normalize_span
from .parsing import ParseResult

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_FIRST_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_JSON_FENCE = re.compile(r"```json(.*?)```", re.DOTALL)


def reference_label(label: str) -> str:
    """The reference's ``process_label``: lower-case and strip, nothing else."""
    return label.lower().strip()


def reference_label_is_valid(label: str) -> bool:
    return reference_label(label) not in INVALID_LABELS


def reference_schema(labels: Iterable[str]) -> list[str]:
    """A dataset's ``labels.json`` as the reference offers it: lower-cased, sorted, invalid removed."""
    return sorted({reference_label(lbl) for lbl in labels if reference_label_is_valid(lbl)})


def reference_answer_text(completion: str) -> tuple[str, str | None]:
    """(the text the reference hands to ``json.loads``, an error where the reference would crash)."""
    if "<think>" in completion or "</think>" in completion:
        completion = _THINK_BLOCK.sub("", completion).replace("<think>", "").replace("</think>", "")
    if "<answer>" in completion:
        found = _ANSWER.findall(completion)
        completion = found[0] if found else completion.replace("<answer>", "").replace("</answer>", "")
    if "```json" in completion:
        found = _JSON_FENCE.findall(completion)
        if not found:
            return "", "unclosed ```json fence (the reference fails on it)"
        completion = found[0]
    return completion.strip(), None


def _strings(spans: Any) -> list[str] | None:
    """What ``for span in spans: if isinstance(span, str)`` yields; None where iterating fails."""
    if isinstance(spans, (str, list, tuple, dict)):
        return [s for s in spans if isinstance(s, str)]
    return None


def reference_parse(completion: Any, schema: list[str] | None = None) -> ParseResult:
    """One generation parsed by the reference's rules (see the module docstring).

    ``ok`` is true when ``json.loads`` returned an object with an ``entities`` object (the
    answers the reference can score; everything else is an empty prediction there).
    """
    if not isinstance(completion, str):
        return ParseResult(error=f"generation is {type(completion).__name__}, not text")
    think = _FIRST_THINK.findall(completion) if "<think>" in completion else []
    text, crash = reference_answer_text(completion)
    result = ParseResult(reasoning=think[0] if think else "", answer_text=text, error=crash)
    if crash:
        return result
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        result.error = f"invalid JSON: {exc.msg} at char {exc.pos} (no text may surround the answer)"
        return result
    if not isinstance(obj, dict) or "entities" not in obj:
        result.error = "JSON answer has no 'entities' key"
        return result
    if not isinstance(obj["entities"], dict):
        result.error = f"'entities' is {type(obj['entities']).__name__}, not an object (the reference fails on it)"
        return result
    for raw_label, spans in obj["entities"].items():
        strings = _strings(spans)
        if strings is None:
            result.error = f"label {raw_label!r}: {type(spans).__name__} is not a list of spans (the reference fails on it)"
            result.entities = {}
            return result
        label = reference_label(raw_label)
        result.entities.setdefault(label, []).extend(s.strip() for s in strings)
    if schema is not None:
        allowed = set(schema)
        result.out_of_schema = sorted(lbl for lbl in result.entities if lbl not in allowed)
    return result


def reference_pairs(pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """The reference's per-sentence set: (SQuAD-normalized span, label), no label filtered."""
    return {(normalize_span(span), label) for span, label in pairs}
