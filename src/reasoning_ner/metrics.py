"""NER metrics: the paper-parity string-set F1 and a strict offset F1.

Paper parity (the reference's ``rner/metric.py``): for each sentence, the *set* of
(SQuAD-normalized span text, label) pairs is compared with the gold set; true positives,
predictions and gold counts are summed over the dataset (micro P/R/F1). Duplicates within a
sentence collapse. Invalid labels (misc/else/...) are dropped from predictions as from gold.
Edge cases, as in the reference's ``safe_div``: any ratio with a zero denominator is 0, so a
dataset (or sample) with no gold and no prediction scores P = R = F1 = 0.

Strict: the same micro P/R/F1 over (start, end, label) character offsets of grounded entities.

The average over datasets is the macro average of per-dataset F1 (:func:`macro_average`).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .labels import is_valid_label

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_span(text: str) -> str:
    """SQuAD answer normalization: lower-case, drop punctuation and articles, fold whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p, r = safe_div(tp, n_pred), safe_div(tp, n_gold)
    return {"precision": p, "recall": r, "f1": safe_div(2 * p * r, p + r)}


@dataclass
class Tally:
    """Running counts for micro P/R/F1, overall and per label."""

    tp: int = 0
    n_pred: int = 0
    n_gold: int = 0
    per_label: dict[str, Counter] = field(default_factory=dict)

    def add(self, pred: set[tuple], gold: set[tuple]) -> None:
        """Add one sentence; the label is the last element of each tuple."""
        hits = pred & gold
        self.tp += len(hits)
        self.n_pred += len(pred)
        self.n_gold += len(gold)
        for key, items in (("tp", hits), ("pred", pred), ("gold", gold)):
            for item in items:
                self.per_label.setdefault(item[-1], Counter())[key] += 1

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {**prf(self.tp, self.n_pred, self.n_gold), "tp": self.tp, "pred": self.n_pred, "gold": self.n_gold}
        out["per_label"] = {
            label: {**prf(c["tp"], c["pred"], c["gold"]), "tp": c["tp"], "pred": c["pred"], "gold": c["gold"]}
            for label, c in sorted(self.per_label.items())
        }
        return out


def string_pairs(pairs: Iterable[tuple[str, str]], drop_invalid: bool = True) -> set[tuple[str, str]]:
    """The paper's per-sentence set: (normalized span, label)."""
    return {(normalize_span(span), label) for span, label in pairs if not drop_invalid or is_valid_label(label)}


def sample_f1(pred_pairs: Iterable[tuple[str, str]], gold_pairs: Iterable[tuple[str, str]]) -> float:
    """Per-sample micro-F1 over (normalized span, label); 0 when both sides are empty (reference)."""
    pred, gold = string_pairs(pred_pairs), string_pairs(gold_pairs)
    return prf(len(pred & gold), len(pred), len(gold))["f1"]


@dataclass
class SentenceScore:
    """Inputs for one sentence: predicted/gold (span, label) pairs and optional offsets."""

    pred_pairs: list[tuple[str, str]]
    gold_pairs: list[tuple[str, str]]
    pred_offsets: list[tuple[int, int, str]] | None = None
    gold_offsets: list[tuple[int, int, str]] | None = None
    #: the pairs the reference's parser reads from the same output (reasoning_ner.parity); None = pred_pairs
    parity_pred_pairs: list[tuple[str, str]] | None = None


def score(sentences: Iterable[SentenceScore], drop_invalid: bool = True) -> dict[str, Any]:
    """The metrics over a dataset's sentences: paper (our parser), parity (the reference's parser,
    predicted labels never filtered) and strict (grounded offsets)."""
    paper, parity, strict = Tally(), Tally(), Tally()
    n = 0
    has_offsets = True
    for s in sentences:
        n += 1
        gold = string_pairs(s.gold_pairs, drop_invalid)
        paper.add(string_pairs(s.pred_pairs, drop_invalid), gold)
        parity_pred = s.parity_pred_pairs if s.parity_pred_pairs is not None else s.pred_pairs
        parity.add(string_pairs(parity_pred, drop_invalid=False), gold)
        if s.pred_offsets is None or s.gold_offsets is None:
            has_offsets = False
            continue
        keep = (lambda lbl: is_valid_label(lbl)) if drop_invalid else (lambda lbl: True)
        strict.add({o for o in s.pred_offsets if keep(o[2])}, {o for o in s.gold_offsets if keep(o[2])})
    return {"sentences": n, "paper": paper.report(), "parity": parity.report(), "strict": strict.report() if has_offsets else None}


def macro_average(per_dataset_f1: dict[str, float]) -> float:
    """Unweighted mean of per-dataset F1, the paper's reported average; 0 for no datasets."""
    return safe_div(sum(per_dataset_f1.values()), len(per_dataset_f1))
