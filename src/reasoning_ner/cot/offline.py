"""The offline teacher: deterministic, gold-grounded reasoning chains with no network and no model.

It walks the schema type by type and justifies each gold entity from its context (the words
around it). Because the chains are built from the gold annotation, verification rejects almost
nothing locally; rejection behaviour is exercised with the stub HTTP teacher in the tests.

Two styles: ``compact`` (about 40 tokens, the tiny-cpu model's sequence budget) and ``full``
(several sentences per type, closer to what a reasoning LLM writes, for the GPU profiles).
"""

from __future__ import annotations

import re

from ..records import Entity, NERRecord

OFFLINE_TEACHER_NAME = "offline-gold-v1"

_WORD = re.compile(r"\w[\w'&.-]*", re.UNICODE)


def _context(text: str, ent: Entity) -> tuple[str, str]:
    """The word just before and just after an entity ('' at the sentence edges)."""
    before = _WORD.findall(text[: ent.start])
    after = _WORD.findall(text[ent.end :])
    return (before[-1] if before else ""), (after[0] if after else "")


def _by_label(record: NERRecord) -> dict[str, list[Entity]]:
    grouped: dict[str, list[Entity]] = {}
    seen: set[tuple[str, str]] = set()
    for ent in sorted(record.entities, key=lambda e: (e.start, e.end)):
        if (ent.text, ent.label) in seen:
            continue
        seen.add((ent.text, ent.label))
        grouped.setdefault(ent.label, []).append(ent)
    return grouped


def compact_chain(record: NERRecord) -> str:
    """``label: span, span; label: none.`` over the schema, in schema order."""
    grouped = _by_label(record)
    parts = []
    for label in record.schema:
        spans = [e.text for e in grouped.get(label, [])]
        parts.append(f"{label}: {', '.join(spans) if spans else 'none'}")
    return "; ".join(parts) + "." if parts else "No entity types to look for."


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def full_chain(record: NERRecord) -> str:
    """A step-by-step chain: one paragraph per schema type, each entity justified by its context."""
    grouped = _by_label(record)
    lines = [f"The schema asks for {len(record.schema)} type(s): {', '.join(record.schema)}. I will check them one at a time."]
    for label in record.schema:
        ents = grouped.get(label, [])
        if not ents:
            lines.append(f"{label}: nothing in the sentence refers to {_a(label)}.")
            continue
        for ent in ents:
            before, after = _context(record.text, ent)
            where = []
            if before:
                where.append(f'after "{before}"')
            if after:
                where.append(f'before "{after}"')
            place = " and ".join(where) if where else "on its own"
            lines.append(f'{label}: "{ent.text}" appears {place}; in this context it names {_a(label)}.')
    found = sum(len(v) for v in grouped.values())
    lines.append(f"In total I found {found} entit{'y' if found == 1 else 'ies'}, all copied exactly from the sentence.")
    return "\n".join(lines)


def offline_chain(record: NERRecord, style: str = "full") -> str:
    if style == "compact":
        return compact_chain(record)
    if style == "full":
        return full_chain(record)
    raise ValueError(f"unknown chain style {style!r}; use compact or full")
