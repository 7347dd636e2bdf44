"""Grounding: map predicted span strings to character offsets in the input text.

This is what makes an extraction verifiable: an entity is reported only where its text really
occurs in the input. The rule is deterministic:

1. Every occurrence of the span counts (the answer format lists a string once per label, so one
   string stands for all its mentions).
2. An occurrence must sit on word boundaries: the span may not start or end inside a word
   ("York" does not match inside "Yorkshire"). Exact-case occurrences are used when any exist;
   otherwise case-insensitive ones (models often change case).
3. Longest span wins: an occurrence that lies wholly inside an occurrence of a *longer*
   predicted span (any label) is dropped, so "York" is not reported inside "New York".
   Equal spans with different labels are both kept; partial overlaps are both kept.
4. A span with no valid occurrence (or an empty/whitespace span) is *ungrounded*: it is kept out
   of the entity list and reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .records import Entity


@dataclass
class GroundingResult:
    entities: list[Entity] = field(default_factory=list)
    ungrounded: list[tuple[str, str]] = field(default_factory=list)  # (span, label)


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def find_occurrences(text: str, span: str, word_boundary: bool = True) -> list[tuple[int, int]]:
    """All word-boundary occurrences of ``span`` in ``text`` (exact case first, then any case)."""
    if not span or not span.strip():
        return []
    for haystack, needle in ((text, span), (text.lower(), span.lower())):
        # lower() can change lengths (e.g. "İ"); offsets are only trusted when lengths are kept.
        if len(haystack) != len(text) or len(needle) != len(span):
            continue
        found: list[tuple[int, int]] = []
        start = haystack.find(needle)
        while start != -1:
            end = start + len(needle)
            left_ok = start == 0 or not (_is_word_char(text[start - 1]) and _is_word_char(text[start]))
            right_ok = end == len(text) or not (_is_word_char(text[end - 1]) and _is_word_char(text[end]))
            if (left_ok and right_ok) or not word_boundary:
                found.append((start, end))
            start = haystack.find(needle, start + 1)
        if found:
            return found
    return []


def ground(text: str, predicted: dict[str, list[str]] | list[tuple[str, str]]) -> GroundingResult:
    """Ground ``{label: [span, ...]}`` (or a list of ``(span, label)``) against ``text``."""
    pairs: list[tuple[str, str]]
    if isinstance(predicted, dict):
        pairs = [(span, label) for label, spans in predicted.items() for span in spans]
    else:
        pairs = list(predicted)
    result = GroundingResult()
    candidates: list[Entity] = []
    seen_pairs: set[tuple[str, str]] = set()
    for span, label in pairs:
        if (span, label) in seen_pairs:
            continue
        seen_pairs.add((span, label))
        occurrences = find_occurrences(text, span)
        if not occurrences:
            result.ungrounded.append((span, label))
            continue
        candidates.extend(Entity(s, e, label, text[s:e]) for s, e in occurrences)
    # Rule 3: drop occurrences strictly contained in a longer candidate occurrence.
    kept = [
        c
        for c in candidates
        if not any(
            o.start <= c.start and c.end <= o.end and (o.end - o.start) > (c.end - c.start) for o in candidates
        )
    ]
    result.entities = sorted(set(kept))
    return result
