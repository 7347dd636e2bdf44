"""Harvest, part 2: which logged sentences the teacher labels, within a budget.

Uncertainty signals are what the service already logs:

* ``parse_error``: some sample's answer could not be parsed;
* ``ungrounded``: some sample named a span that is not in the sentence;
* ``low_agreement``: two samples of the same sentence and label set (the sentence asked twice, by
  two model versions or with sampling) agree below ``flywheel.harvest_min_agreement`` (F1 of their
  entity sets). A sentence logged once has one sample and no agreement signal: it is neither
  counted as agreeing nor as uncertain (``agreement`` is None), and request-only logs (no
  predictions) carry none of the three signals.

Uncertain sentences fill up to ``harvest_uncertain_share`` of the budget first, most signals first;
the rest of the budget goes round-robin over the asked label types (rarest type first), so a
frequent type cannot crowd out a rare one. Ties are broken by a seeded shuffle.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import combinations
from typing import Any

from ..cot.verify import gold_agreement
from .harvest_read import Sentence

MAX_COMPARED = 20  # samples compared per sentence: a sentence logged 10,000 times costs no more than one logged 20 times


def served_pairs(sample: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(e.get("text", "")), str(e.get("label", ""))) for e in sample.get("entities", []) if isinstance(e, dict)]


def agreement(sentence: Sentence) -> float | None:
    """Lowest pairwise F1 between the logged samples' entity sets; None with fewer than two samples."""
    # Request-only logs hold empty entity lists: two of them agree (1.0) and raise no signal.
    if len(sentence.samples) < 2:
        return None
    return min(gold_agreement(served_pairs(a), served_pairs(b)) for a, b in combinations(sentence.samples[:MAX_COMPARED], 2))


def signals(sentence: Sentence, min_agreement: float) -> list[str]:
    found = []
    if any(s.get("parse_error") for s in sentence.samples):
        found.append("parse_error")
    if any(s.get("ungrounded") for s in sentence.samples):
        found.append("ungrounded")
    score = agreement(sentence)
    if score is not None and score < min_agreement:
        found.append("low_agreement")
    return found


def select(
    sentences: list[Sentence], budget: int, uncertain_share: float, min_agreement: float, seed: int
) -> tuple[list[tuple[Sentence, list[str]]], dict[str, Any]]:
    """The chosen sentences (with their signals) and a summary of the choice."""
    rng = random.Random(seed)
    pool = list(sentences)
    rng.shuffle(pool)
    flagged = {s.key: signals(s, min_agreement) for s in pool}
    uncertain = sorted((s for s in pool if flagged[s.key]), key=lambda s: -len(flagged[s.key]))  # stable: seeded order kept
    chosen = uncertain[: min(len(uncertain), math.ceil(budget * uncertain_share))]
    taken = {s.key for s in chosen}

    by_label: dict[str, list[Sentence]] = {}
    for s in pool:
        for label in s.labels:
            by_label.setdefault(label, []).append(s)
    order = sorted(by_label, key=lambda label: (len(by_label[label]), label))  # rarest type first
    cursors = dict.fromkeys(order, 0)
    while len(chosen) < budget and order:
        for label in list(order):
            queue = by_label[label]
            while cursors[label] < len(queue) and queue[cursors[label]].key in taken:
                cursors[label] += 1
            if cursors[label] >= len(queue):
                order.remove(label)
                continue
            pick = queue[cursors[label]]
            chosen.append(pick)
            taken.add(pick.key)
            if len(chosen) >= budget:
                break
    signal_counts: Counter[str] = Counter(x for s in chosen for x in flagged[s.key])
    summary = {
        "candidates": len(sentences),
        "uncertain_candidates": len(uncertain),
        "selected": len(chosen),
        "selected_uncertain": sum(1 for s in chosen if flagged[s.key]),
        "selected_by_signal": dict(sorted(signal_counts.items())),
        "selected_by_label": dict(sorted(Counter(label for s in chosen for label in s.labels).items())),
        "with_second_sample": sum(1 for s in sentences if agreement(s) is not None),
    }
    return [(s, flagged[s.key]) for s in chosen], summary
