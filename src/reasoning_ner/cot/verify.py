"""Structural checks of a teacher's chain and answer (the paper's step 2, made explicit).

Each failed check adds a named reason; a record is accepted only when there is none. Reasons:

* ``answer_unparseable``: the answer is not a JSON ``{"entities": {...}}`` object;
* ``label_outside_schema``: a label that the schema does not offer;
* ``span_not_in_sentence``: a span that does not occur in the sentence (hallucinated);
* ``entity_not_in_chain``: an answered entity the chain never mentions;
* ``chain_too_short`` / ``chain_too_long``: chain word count outside the configured bounds;
* ``low_gold_agreement``: (reannotate mode) F1 of the answer against the gold annotation below
  the threshold. Here both-empty counts as full agreement (1.0), unlike the paper's metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..grounding import ground
from ..metrics import prf, string_pairs
from ..parsing import parse_answer
from ..records import Entity, NERRecord


@dataclass
class Verdict:
    reasons: list[str] = field(default_factory=list)
    entities: list[Entity] = field(default_factory=list)  # the teacher's answer, grounded
    gold_f1: float | None = None
    details: dict[str, list] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return not self.reasons


def gold_agreement(pred_pairs: list[tuple[str, str]], gold_pairs: list[tuple[str, str]]) -> float:
    pred, gold = string_pairs(pred_pairs), string_pairs(gold_pairs)
    if not pred and not gold:
        return 1.0
    return prf(len(pred & gold), len(pred), len(gold))["f1"]


def verify(
    record: NERRecord,
    chain: str,
    answer: str,
    mode: str = "reannotate",
    min_gold_f1: float = 0.5,
    min_chain_words: int = 3,
    max_chain_words: int = 3000,
) -> Verdict:
    verdict = Verdict()
    parsed = parse_answer(answer, record.schema)
    words = len(chain.split())
    if words < min_chain_words:
        verdict.reasons.append("chain_too_short")
    elif words > max_chain_words:
        verdict.reasons.append("chain_too_long")
    if not parsed.ok:
        verdict.reasons.append("answer_unparseable")
        verdict.details["parse_error"] = [parsed.error]
        return verdict
    if parsed.out_of_schema:
        verdict.reasons.append("label_outside_schema")
        verdict.details["labels"] = parsed.out_of_schema
    grounding = ground(record.text, parsed.entities)
    if grounding.ungrounded:
        verdict.reasons.append("span_not_in_sentence")
        verdict.details["ungrounded"] = [list(p) for p in grounding.ungrounded]
    chain_lower = chain.lower()
    missing = [span for span, _ in parsed.pairs() if span.lower() not in chain_lower]
    if missing:
        verdict.reasons.append("entity_not_in_chain")
        verdict.details["not_in_chain"] = missing
    if mode == "reannotate":
        verdict.gold_f1 = gold_agreement(parsed.pairs(), [(e.text, e.label) for e in record.entities])
        if verdict.gold_f1 < min_gold_f1:
            verdict.reasons.append("low_gold_agreement")
    verdict.entities = grounding.entities
    return verdict
