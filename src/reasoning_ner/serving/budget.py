"""The reasoning budget (budget forcing) and the answer's validation, repair and grounding.

Budget forcing, for a sentence with an effective budget B (the smaller of the request's
``max_reasoning_tokens`` and the deployment cap; no budget = one plain generation):

1. generate at most B tokens (B is clamped to ``max_new_tokens``) with ``</think>`` as a stop string;
2. if the model closed its reasoning itself, continue after ``...</think>\\n``; if it ran out of
   budget, append ``\\n</think>\\n`` (the forced close) and continue; if it ended its turn without
   ever closing a think block, that is the whole answer;
3. the continuation is a second generate call on ``prompt + reasoning + close`` with at most
   ``max_answer_tokens`` tokens; where the backend supports structured output (remote vLLM) this
   call carries the answer's JSON schema, which then constrains all of it (the think block is
   already closed in the prompt).

On the remote backend both calls go to ``/completions`` with the raw ChatML prompt (vLLM's prefix
cache makes the second call cheap); without a budget the remote call is ``/chat/completions`` where
vLLM's reasoning parser keeps the schema off the think block. B = 0 answers at once after an empty
think block.

The answer is then parsed (:func:`parsing.parse_answer`, never raises), repaired where that is
safe (a truncated JSON object is closed; labels outside the request are dropped; non-string spans
are dropped by the parser) and grounded (:func:`grounding.ground`): only spans that occur in the
text become entities, with verifiable offsets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..grounding import ground
from ..labels import clean_label
from ..parsing import parse_answer, structural_chars
from ..prompt import THINK_CLOSE, THINK_OPEN, chatml
from .backends import (
    PARSE_FAILURES,
    REASONING_CAPPED,
    REASONING_TOKENS,
    REPAIRS,
    UNGROUNDED,
    Backend,
    GenRequest,
    GenResult,
)
from .schemas import EntityOut, Prediction, UngroundedOut, answer_json_schema

FORCED_CLOSE = f"\n{THINK_CLOSE}\n"


@dataclass
class NERGeneration:
    text: str  # the whole generation as the parser reads it: think block + answer
    completion_tokens: int
    reasoning_tokens: int | None
    capped: bool  # the budget ran out and </think> was forced
    calls: int  # generate calls made (1 or 2)


def effective_budget(request_cap: int | None, deployment_cap: int | None) -> int | None:
    caps = [c for c in (request_cap, deployment_cap) if c is not None]
    return min(caps) if caps else None


def _join(result: GenResult) -> str:
    """Reasoning returned separately (vLLM's reasoning parser) goes back into a think block."""
    if result.reasoning:
        return f"{THINK_OPEN}\n{result.reasoning.strip()}\n{THINK_CLOSE}\n{result.text}"
    return result.text


async def generate_ner(backend: Backend, prompt_text: str, labels: list[str], *, max_new_tokens: int,
                       max_answer_tokens: int, budget: int | None, structured: bool = True) -> NERGeneration:
    """One sentence's generation, honouring the reasoning budget (see the module docstring)."""
    schema = answer_json_schema(labels) if structured and backend.supports_structured_output else None
    if budget is None:
        if schema is not None:
            res = await backend.generate_chat([{"role": "user", "content": prompt_text}], max_new_tokens, schema)
        else:
            res = await backend.generate(GenRequest(chatml(prompt_text), max_new_tokens))
        return NERGeneration(_join(res), res.completion_tokens, res.reasoning_tokens, False, 1)

    prompt = chatml(prompt_text)
    budget = min(budget, max_new_tokens)  # thinking never gets more than a whole generation
    if budget > 0:
        first = await backend.generate(GenRequest(prompt, budget, stop=(THINK_CLOSE,)))
    else:
        first = GenResult(text="", prompt_tokens=0, completion_tokens=0, finish_reason="length")
    if first.stop_reason != THINK_CLOSE and first.finish_reason == "stop":
        # The turn ended inside the budget without a think block to close: that is the answer.
        return NERGeneration(_join(first), first.completion_tokens, first.reasoning_tokens, False, 1)
    natural = first.stop_reason == THINK_CLOSE
    if natural:
        prefix = f"{first.text}{THINK_CLOSE}\n"
    else:
        head = first.text if first.text.lstrip().startswith(THINK_OPEN) else f"{THINK_OPEN}\n{first.text}"
        prefix = head + FORCED_CLOSE
    second = await backend.generate(GenRequest(prompt + prefix, max_answer_tokens, json_schema=schema))
    return NERGeneration(prefix + second.text, first.completion_tokens + second.completion_tokens,
                         first.completion_tokens if budget > 0 else 0, not natural, 2 if budget > 0 else 1)


# ------------------------------------------------------------------------------------ repair


def close_truncated_json(answer: str, max_tries: int = 64) -> str | None:
    """Close a JSON object cut off mid-way (a generation that hit its token limit): cut back to a
    structural character and append the missing quotes/brackets; None when nothing parses."""
    start = answer.find("{")
    if start < 0:
        return None
    text = answer[start:]
    cuts = [i for i in range(len(text) - 1, -1, -1) if text[i] in '"]}[{0123456789el'][:max_tries]
    for cut in cuts:
        prefix = text[: cut + 1]
        stack: list[str] = []
        for _, ch in structural_chars(prefix):
            if ch in "{[":
                stack.append("}" if ch == "{" else "]")
            elif ch in "}]":
                if not stack or stack.pop() != ch:
                    break
        else:
            candidate = prefix + "".join(reversed(stack))  # a prefix cut inside a string does not parse
            try:
                json.loads(candidate)
            except json.JSONDecodeError:
                continue
            return candidate
    return None


def build_prediction(text: str, labels: list[str], gen: NERGeneration, return_reasoning: bool) -> Prediction:
    """Parse, repair and ground one generation; model garbage gives empty entities + parse_error."""
    parsed = parse_answer(gen.text, labels)
    repairs: list[str] = []
    entities = parsed.entities
    error = parsed.error
    if error is not None and (error.startswith("invalid JSON") or error.startswith("no JSON object")):
        fixed = close_truncated_json(parsed.answer_text)
        if fixed is not None:
            again = parse_answer(fixed, labels)
            if again.ok:
                entities, error = again.entities, None
                repairs.append("closed a truncated JSON answer")
                REPAIRS.labels("closed_json").inc()
    allowed = {}
    for label in labels:
        allowed.setdefault(clean_label(label), label)
    dropped = sorted(lbl for lbl in entities if lbl not in allowed)
    if dropped:
        repairs.append(f"dropped labels outside the request: {dropped}")
        REPAIRS.labels("dropped_labels").inc()
    kept = {allowed[lbl]: spans for lbl, spans in entities.items() if lbl in allowed}
    grounded = ground(text, kept)
    if error is not None:
        PARSE_FAILURES.inc()
    if grounded.ungrounded:
        UNGROUNDED.inc(len(grounded.ungrounded))
    if gen.reasoning_tokens is not None:
        REASONING_TOKENS.observe(gen.reasoning_tokens)
    if gen.capped:
        REASONING_CAPPED.inc()
    return Prediction(
        entities=[EntityOut(text=e.text, label=e.label, start=e.start, end=e.end) for e in grounded.entities],
        ungrounded=[UngroundedOut(text=span, label=label) for span, label in grounded.ungrounded],
        reasoning=parsed.reasoning if return_reasoning else None,
        parse_error=error,
        repairs=repairs,
        reasoning_capped=gen.capped,
        reasoning_tokens=gen.reasoning_tokens,
        completion_tokens=gen.completion_tokens,
    )
