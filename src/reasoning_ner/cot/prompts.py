"""Teacher and judge prompts (the paper never published its own; these are ours).

Teacher (reannotate, as in the paper): sentence + schema -> a reasoning chain and a JSON answer.
Teacher (explain): additionally sees the gold entities and must justify them.
Judge: a rubric prompt returning a 0-10 score for logical coherence and factual accuracy.
"""

from __future__ import annotations

import json
import re

from ..prompt import OUTPUT_FORMAT_EXAMPLE, schema_json

TEACHER_REANNOTATE = """You annotate named entities for a training corpus.
Read the sentence and find every entity that belongs to one of the types in the schema.
Think step by step: go through the schema one type at a time, quote each candidate span exactly as it appears in the sentence, and explain from its context why it is (or is not) an entity of that type.
Then give the final answer as JSON only, in the output format. Use only the schema's types; copy spans verbatim; list each span once per type; use an empty object when nothing matches.
Schema: {schema}
Output format: {output_format}
Sentence: {sentence}"""

TEACHER_EXPLAIN = """You explain named-entity annotations for a training corpus.
The sentence below has been annotated with the gold entities listed. Think step by step: go through the schema one type at a time and explain, from the context of each quoted span, why it is an entity of its type, and why no other span of the sentence is.
Then repeat the gold entities as the final answer, as JSON only, in the output format.
Schema: {schema}
Output format: {output_format}
Sentence: {sentence}
Gold entities: {gold}"""

JUDGE_RUBRIC = """You grade reasoning chains written for named entity recognition.
Score the chain from 0 to 10 for logical coherence and factual accuracy:
- 10: every step is correct, each entity is justified from the sentence, no contradictions, the final answer follows from the reasoning.
- 7-9: sound overall, minor omissions or slightly weak justifications.
- 4-6: noticeable gaps, unjustified or doubtful entities.
- 0-3: incoherent, contradicts the sentence or the answer, or invents spans.
Reply with the score alone on the last line as "Score: N".
Schema: {schema}
Sentence: {sentence}
Reasoning chain:
{chain}
Final answer: {answer}"""

_SCORE = re.compile(r"score\s*[:=]\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER_ONLY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*$")


def teacher_prompt(sentence: str, schema: list[str], mode: str, gold: dict[str, list[str]] | None = None) -> str:
    if mode == "reannotate":
        return TEACHER_REANNOTATE.format(schema=schema_json(schema), output_format=OUTPUT_FORMAT_EXAMPLE, sentence=sentence)
    if mode == "explain":
        return TEACHER_EXPLAIN.format(
            schema=schema_json(schema),
            output_format=OUTPUT_FORMAT_EXAMPLE,
            sentence=sentence,
            gold=json.dumps({"entities": gold or {}}, ensure_ascii=False),
        )
    raise ValueError(f"unknown teacher mode {mode!r}; use reannotate or explain")


def judge_prompt(sentence: str, schema: list[str], chain: str, answer: str) -> str:
    return JUDGE_RUBRIC.format(schema=schema_json(schema), sentence=sentence, chain=chain, answer=answer)


def parse_judge_score(text: str) -> float | None:
    """The last ``Score: N`` in the reply (reasoning judges think first), or a bare number; None if absent."""
    matches = _SCORE.findall(text or "")
    if matches:
        value = float(matches[-1])
    else:
        last = (text or "").strip().splitlines()[-1:] or [""]
        m = _NUMBER_ONLY.match(last[0])
        if not m:
            return None
        value = float(m.group(1))
    return value if 0.0 <= value <= 10.0 else None
