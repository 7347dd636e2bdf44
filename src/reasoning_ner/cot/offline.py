"""The offline teacher: deterministic, gold-grounded reasoning chains with no network and no model.

``full`` walks the schema type by type and justifies each gold entity from its context (the
words around it); ``compact`` lists the sentence's capitalized spans as candidates (~15 tokens);
``tagged`` (the tiny-cpu profile) repeats the sentence with each entity marked in place. Because
the chains are built from the gold annotation, verification rejects almost nothing locally;
rejection behaviour is exercised with the stub HTTP teacher in the tests.

``full`` is closer to what a reasoning LLM writes; the GPU profiles use a real teacher anyway.
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


#: At most this many candidates in a compact chain (long passages would blow the token budget).
MAX_CANDIDATES = 12


def capitalized_spans(text: str) -> list[str]:
    """Maximal runs of capitalized words (only whitespace between them), deduplicated, in order."""
    runs: list[str] = []
    current: list[str] = []
    last_end = 0
    for match in _WORD.finditer(text):
        word = match.group()
        if not word[:1].isupper():
            if current:
                runs.append(" ".join(current))
            current = []
            continue
        if current and not text[last_end : match.start()].isspace():
            runs.append(" ".join(current))
            current = []
        current.append(word)
        last_end = match.end()
    if current:
        runs.append(" ".join(current))
    return list(dict.fromkeys(runs))


def compact_chain(record: NERRecord) -> str:
    """``Candidates: A; B; C.``: the sentence's capitalized spans plus every gold span, in order.

    The shortest chain that still helps a small model: listing candidates gives it a copy scaffold
    (tokens it copies from the sentence before it decides), which made the templated chain of
    shared/reference/tiny-cpu-learning.md twice as good as no chain at the same budget, while
    adding only ~15 tokens. Gold spans are always listed (lower-case ones too), so the answer
    never names an entity the chain does not mention (verify's ``entity_not_in_chain``); the cap
    of :data:`MAX_CANDIDATES` drops surface candidates only.
    """
    gold = {e.text: e.start for e in sorted(record.entities, key=lambda e: e.start)}
    surface = [c for c in capitalized_spans(record.text) if c not in gold]
    room = max(0, MAX_CANDIDATES - len(gold))
    first_seen = {**{c: record.text.find(c) for c in surface[:room]}, **gold}
    candidates = sorted(first_seen, key=lambda c: (first_seen[c], c))
    return f"Candidates: {'; '.join(candidates) if candidates else 'none'}."


def tagged_chain(record: NERRecord) -> str:
    """The sentence itself with each gold entity marked in place: ``[ EU | organization ] rejects ...``.

    Repeating the sentence in order is the copy a small model's induction heads make (each token
    is the one that followed the previous token in the sentence; reasoning_ner.copy_circuit), and
    marking an entity in place is a local decision per word, as in TANL-style generative NER.
    The answer then copies the marked spans from a few tokens back.
    """
    parts: list[str] = []
    last = 0
    for ent in sorted(record.entities, key=lambda e: (e.start, -e.end)):
        if ent.start < last:
            continue  # nested or overlapping: the outer (first, longest) span is marked
        parts += [record.text[last : ent.start], f"[ {ent.text} | {ent.label} ]"]
        last = ent.end
    parts.append(record.text[last:])
    return "".join(parts)


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
    if style == "tagged":
        return tagged_chain(record)
    raise ValueError(f"unknown chain style {style!r}; use compact, tagged or full")
