"""Prompt and target format, compatible with the paper's (reference doc section 5).

Prompt: one ChatML user turn, no system prompt. The ``paper`` style has the reference's
structure (role line, two notes, schema as a JSON list, output-format example, sentence) in our
own words; the ``compact`` style, for tiny CPU budgets where every prompt token costs training time,
is the schema's JSON list and the sentence on the next line, without instruction words (a model trained
from scratch learns the task from the layout; the words cost 10 of the ~97 tokens of a CoNLL example).

Target: ``<think>\\n{cot}\\n</think>\\n{answer}`` where answer is
``{"entities": {label: [span, ...]}}`` with labels in first-appearance order. Without CoT (the
paper's ablation) the target is the answer alone.
"""

from __future__ import annotations

import json
from typing import Any

from .config import PromptConfig
from .records import NERRecord

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

OUTPUT_FORMAT_EXAMPLE = '{"entities": {"label1": ["span1", "span2"], "label2": ["span3"]}}'

PAPER_TEMPLATE = """You are an information extraction assistant. Find the named entities in the sentence that belong to the types in the schema and return them as JSON.
Notes:
1. The schema lists the entity types you may extract.
2. Extract entities of these types only; never invent a type outside the schema.
Schema: {schema}
Output format: {output_format}
Sentence: {sentence}"""

COMPACT_TEMPLATE = "{schema}\n{sentence}"


def schema_json(schema: list[str]) -> str:
    return json.dumps(list(schema), ensure_ascii=False)


def render_prompt(sentence: str, schema: list[str], style: str = "paper") -> str:
    """The user-turn text (without ChatML wrapping)."""
    if style == "paper":
        text = PAPER_TEMPLATE.format(schema=schema_json(schema), output_format=OUTPUT_FORMAT_EXAMPLE, sentence=sentence)
    elif style == "compact":
        text = COMPACT_TEMPLATE.format(schema=schema_json(schema), sentence=sentence)
    else:
        raise ValueError(f"unknown prompt style {style!r}; use paper or compact")
    return text.strip()


def render_answer(grouped: dict[str, list[str]], indent: int | None = 2) -> str:
    """The JSON answer; ``indent=None`` gives one line (fewer tokens for tiny models)."""
    separators = None if indent is not None else (", ", ": ")
    return json.dumps({"entities": grouped}, ensure_ascii=False, indent=indent, separators=separators)


def render_target(record: NERRecord, cfg: PromptConfig, cot: str | None = None) -> str:
    """The assistant turn the model learns: think block (when enabled) + JSON answer."""
    answer = render_answer(record.grouped_spans(), cfg.answer_indent)
    if not cfg.with_cot:
        return answer
    chain = (cot if cot is not None else record.cot) or ""
    return f"{THINK_OPEN}\n{chain.strip()}\n{THINK_CLOSE}\n{answer}"


def chatml(prompt: str, completion: str | None = None) -> str:
    """ChatML text: the user turn plus the generation prompt, and the completion when given."""
    text = f"{IM_START}user\n{prompt}{IM_END}\n{IM_START}assistant\n"
    if completion is not None:
        text += f"{completion}{IM_END}\n"
    return text


def messages(prompt: str, completion: str | None = None) -> list[dict[str, str]]:
    """The same turn as chat messages (for trl's conversational datasets and OpenAI clients)."""
    msgs = [{"role": "user", "content": prompt}]
    if completion is not None:
        msgs.append({"role": "assistant", "content": completion})
    return msgs


def chat_example(record: NERRecord | dict[str, Any], cfg: PromptConfig) -> str:
    """Full ChatML training text (prompt + target) of one canonical record."""
    rec = record if isinstance(record, NERRecord) else NERRecord.from_dict(record)
    return chatml(render_prompt(rec.text, rec.schema, cfg.style), render_target(rec, cfg))
