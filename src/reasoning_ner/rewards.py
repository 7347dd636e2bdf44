"""GRPO rewards, one function per term, with trl's reward signature.

Every reward is ``fn(completions, **kwargs) -> list[float]``, one float per completion. trl calls
it with ``prompts``, ``completions``, ``completion_ids`` and every extra dataset column as
keyword arguments (one value per completion); the columns used here are ``gold`` (the gold
``(span, label)`` pairs, see :data:`GOLD_COLUMN`) and ``schema`` (the label set offered in the
prompt). A completion is either a string (plain-text prompts, what
:mod:`reasoning_ner.training.rl_data` produces) or a list of chat messages
``[{"role": "assistant", "content": ...}]`` (conversational prompts); both are handled by
:func:`completion_text`.

The terms and their weights (config ``grpo.reward_*_weight``):

=================  ======================================================  =========  ==========
term               value                                                   range      weight
=================  ======================================================  =========  ==========
:func:`f1_reward`  per-sample micro-F1 over (normalized span, label)       [0, 1]     10 (paper)
schema             1 iff the answer is valid JSON and every label is in    {0, 1}     1 (paper)
                   the schema
format             1 iff exactly one closed ``<think>`` block first, then  {0, 1}     0 (off)
                   nothing but a JSON answer
length             ``-min(1, (n - B) / B)`` when the thinking has          [-1, 0]    0 (off)
                   ``n > B`` tokens (``B`` = ``grpo.think_token_budget``),
                   else 0
=================  ======================================================  =========  ==========

The paper's reward is ``10 * F1 + 1 * schema``; format and length are our optional additions.

Edge cases (tested in ``tests/test_rewards.py``):

* **Parse failure** (no JSON object, invalid JSON, no ``entities`` dict, an unclosed
  ``<think>`` block, a completion that is not text): F1 = 0, schema = 0, format = 0.
* **Empty gold, empty prediction** (``{"entities": {}}`` for a sentence without entities):
  F1 = **0**, as in the reference (``safe_div``: every zero denominator gives 0,
  :func:`reasoning_ner.metrics.sample_f1`); schema = **1** (valid JSON, no label outside the
  schema), so the correct empty answer is still rewarded, by the schema term only. This is the
  reason the paper keeps the schema term.
* **Empty gold, non-empty prediction**: F1 = 0 (precision 0); schema = 1 if the invented
  labels are in the schema.
* **Non-empty gold, empty prediction**: F1 = 0 (recall 0); schema = 1.
* **Labels outside the schema**: they never match gold (F1 counts them as false positives) and
  schema = 0. Invalid labels (misc/else/other/...) are dropped from both sides before F1, as the
  paper metric does.
* **Duplicates and case/punctuation**: spans are SQuAD-normalized and compared as sets, so a
  repeated span or ``"the Nile"`` vs ``"Nile"`` counts once / matches.
* **Length**: a completion with no ``<think>`` block has 0 thinking tokens (no penalty: pair
  the length term with the format term, which requires the block, or the policy can drop its
  reasoning altogether, as measured on the tiny model); an
  unclosed block counts everything after ``<think>``. Tokens are counted with the tokenizer when
  one is given (``len(tokenizer(reasoning, add_special_tokens=False).input_ids)``, the unit the
  policy generates in), otherwise as whitespace-separated words (a tokenizer-free proxy: about
  0.75 words per token for English BPE, so set the budget in the unit you count in).
  :func:`build_reward_funcs` passes the policy's tokenizer, so in training the budget is in
  tokens.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .labels import clean_label
from .metrics import prf, sample_f1, string_pairs
from .parity import reference_pairs, reference_parse
from .parsing import ParseResult, parse_answer, split_reasoning

__all__ = [
    "GOLD_COLUMN",
    "PARSERS",
    "answer_f1",
    "answer_parser",
    "SCHEMA_COLUMN",
    "RewardBreakdown",
    "build_reward_funcs",
    "completion_text",
    "count_think_tokens",
    "f1_reward",
    "format_reward",
    "gold_pairs",
    "length_penalty",
    "length_reward",
    "reward_breakdown",
    "schema_reward",
]

#: Dataset column with the gold entities: a list of ``[span, label]`` pairs.
GOLD_COLUMN = "gold"
#: Dataset column with the label set offered in the prompt.
SCHEMA_COLUMN = "schema"

RewardFunc = Callable[..., list[float]]

logger = logging.getLogger(__name__)

_END_MARKERS = ("<|im_end|>", "<|endoftext|>")
_FORMAT = re.compile(r"^<think>(?P<think>.*?)</think>(?P<answer>.*)$", re.DOTALL)


# ---------------------------------------------------------------------------------- inputs


def completion_text(completion: Any) -> str:
    """The generated text of one completion, plain or conversational.

    ``str`` is returned as is; a message list gives the concatenated ``content`` of its
    assistant messages (content may also be a list of ``{"type": "text", "text": ...}`` blocks);
    a single message dict gives its content. Anything else gives ``""`` (which parses as a
    failure, so every reward treats it as a wrong answer rather than crashing the run).
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if isinstance(completion, Sequence):
        parts: list[str] = []
        for message in completion:
            if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
                continue
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, Sequence):
                parts.extend(
                    str(block.get("text", "")) for block in content if isinstance(block, Mapping) and block.get("type") == "text"
                )
        return "".join(parts)
    return ""


def gold_pairs(gold: Any) -> list[tuple[str, str]]:
    """Gold entities as ``(span, label)`` pairs.

    Accepts the dataset column format (a list of ``[span, label]`` pairs), a list of
    ``{"text"|"span": ..., "label": ...}`` dicts, or a grouped answer ``{label: [span, ...]}``.
    ``None`` means no gold entities.
    """
    if gold is None:
        return []
    if isinstance(gold, str):
        gold = json.loads(gold)
    if isinstance(gold, Mapping):
        return [(str(span), clean_label(label)) for label, spans in gold.items() for span in spans]
    pairs: list[tuple[str, str]] = []
    for item in gold:
        if isinstance(item, Mapping):
            pairs.append((str(item.get("text", item.get("span", ""))), clean_label(item["label"])))
        else:
            span, label = item
            pairs.append((str(span), clean_label(label)))
    return pairs


def _column(kwargs: dict[str, Any], name: str, n: int, reward: str) -> list[Any]:
    if name not in kwargs or kwargs[name] is None:
        raise KeyError(
            f"{reward} needs the dataset column {name!r} (passed by trl as a keyword argument); "
            f"build the RL dataset with reasoning_ner.training.rl_data"
        )
    values = list(kwargs[name])
    if len(values) != n:
        raise ValueError(f"{reward}: {len(values)} values in column {name!r} for {n} completions")
    return values


# ----------------------------------------------------------------------------- single sample


def count_think_tokens(text: str, tokenizer: Any | None = None) -> int:
    """Length of the reasoning of one completion: tokenizer tokens if given, else whitespace words.

    The reasoning is what :func:`reasoning_ner.parsing.split_reasoning` extracts: the inside of
    closed ``<think>`` blocks, or everything after an unclosed ``<think>``; 0 without a block.
    """
    reasoning, _ = split_reasoning(text)
    if not reasoning:
        return 0
    if tokenizer is None:
        return len(reasoning.split())
    return len(tokenizer(reasoning, add_special_tokens=False)["input_ids"])


def length_penalty(think_tokens: int, budget: int) -> float:
    """``-min(1, (n - budget) / budget)`` when ``n > budget``, else 0: linear, capped at -1 (at 2x budget)."""
    if budget < 1:
        raise ValueError(f"think token budget must be >= 1, got {budget}")
    if think_tokens <= budget:
        return 0.0
    return -min(1.0, (think_tokens - budget) / budget)


def _format_ok(text: str) -> bool:
    text = text.strip()
    for marker in _END_MARKERS:
        while text.endswith(marker):
            text = text[: -len(marker)].rstrip()
    if text.count("<think>") != 1 or text.count("</think>") != 1:
        return False
    m = _FORMAT.match(text)
    if m is None:
        return False
    answer = m.group("answer").strip()
    try:
        obj = json.loads(answer)
    except json.JSONDecodeError:
        return False
    if not isinstance(obj, dict) or not isinstance(obj.get("entities"), dict):
        return False
    return all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in obj["entities"].values())


@dataclass(frozen=True)
class RewardBreakdown:
    """Every term for one completion (the unweighted values the reward functions return)."""

    parsed: bool
    f1: float
    schema: float
    format: float
    think_tokens: int
    length: float

    def total(self, f1_weight: float = 10.0, schema_weight: float = 1.0, format_weight: float = 0.0, length_weight: float = 0.0) -> float:
        return f1_weight * self.f1 + schema_weight * self.schema + format_weight * self.format + length_weight * self.length


#: The answer parsers a reward can read with (config ``grpo.reward_parser``).
PARSERS: dict[str, Callable[..., ParseResult]] = {"reference": reference_parse, "lenient": parse_answer}


def answer_parser(name: str) -> Callable[..., ParseResult]:
    if name not in PARSERS:
        raise ValueError(f"unknown answer parser {name!r}; use one of {sorted(PARSERS)}")
    return PARSERS[name]


def answer_f1(result: ParseResult, gold: Any, parser: str = "reference") -> float:
    """Per-sample F1 of a parsed answer; 0 on a parse failure. The reference does not filter
    predicted labels (an invalid one is a false positive); the lenient mode drops them as the
    paper metric does."""
    if not result.ok:
        return 0.0
    if parser == "reference":
        pred, wanted = reference_pairs(result.pairs()), string_pairs(gold_pairs(gold))
        return prf(len(pred & wanted), len(pred), len(wanted))["f1"]
    return sample_f1(result.pairs(), gold_pairs(gold))


def reward_breakdown(
    completion: Any,
    gold: Any,
    schema: Iterable[str] | None,
    budget: int | None = None,
    tokenizer: Any | None = None,
    parser: str = "reference",
) -> RewardBreakdown:
    """All reward terms of one completion (the length term is 0 when ``budget`` is None)."""
    text = completion_text(completion)
    result = answer_parser(parser)(text, list(schema) if schema is not None else None)
    f1 = answer_f1(result, gold, parser)
    think = count_think_tokens(text, tokenizer)
    return RewardBreakdown(
        parsed=result.ok,
        f1=f1,
        schema=1.0 if (result.ok and schema is not None and result.schema_valid()) else 0.0,
        format=1.0 if _format_ok(text) else 0.0,
        think_tokens=think,
        length=length_penalty(think, budget) if budget is not None else 0.0,
    )


# ----------------------------------------------------------------------------- trl rewards


def _log(kwargs: dict[str, Any], name: str, value: float) -> None:
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        log_metric(name, value)


def f1_reward(completions: list[Any], parser: str = "reference", **kwargs: Any) -> list[float]:
    """Per-sample micro-F1 of the parsed answer against ``gold``; 0 on parse failure.

    ``parser``: ``reference`` (the paper's rules, the default) or ``lenient`` (the serving parser).
    Empty gold + empty prediction scores 0 (reference ``safe_div``; see the module docstring).
    Also logs ``completions/parse_rate`` through trl's ``log_metric`` when available.
    """
    golds = _column(kwargs, GOLD_COLUMN, len(completions), "f1_reward")
    parse = answer_parser(parser)
    rewards, parsed = [], 0
    for completion, gold in zip(completions, golds):
        result = parse(completion_text(completion))
        parsed += result.ok
        rewards.append(answer_f1(result, gold, parser))
    if completions:
        _log(kwargs, "completions/parse_rate", parsed / len(completions))
    return rewards


def schema_reward(completions: list[Any], parser: str = "reference", **kwargs: Any) -> list[float]:
    """1 iff the answer parses as JSON with an ``entities`` object and every label is in ``schema``.

    This rewards the correct empty answer ``{"entities": {}}`` when gold is empty (where F1 is 0).
    """
    schemas = _column(kwargs, SCHEMA_COLUMN, len(completions), "schema_reward")
    parse = answer_parser(parser)
    rewards = []
    for completion, schema in zip(completions, schemas):
        result = parse(completion_text(completion), list(schema or []))
        rewards.append(1.0 if result.schema_valid() else 0.0)
    return rewards


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1 iff exactly one closed ``<think>...</think>`` block opens the completion and is followed
    by nothing but a JSON answer ``{"entities": {label: [str, ...]}}`` (trailing ``<|im_end|>``
    allowed). Stricter than the parser, which tolerates prose, fences and trailing text."""
    return [1.0 if _format_ok(completion_text(c)) else 0.0 for c in completions]


def length_reward(
    completions: list[Any], *, budget: int, tokenizer: Any | None = None, **kwargs: Any
) -> list[float]:
    """The length-aware term: ``-min(1, (n - budget) / budget)`` for ``n > budget`` thinking
    tokens, else 0 (see :func:`count_think_tokens` for the unit). Bind ``budget`` (and the
    tokenizer) with :func:`functools.partial`; trl shows it as ``length_reward``. Logs
    ``completions/think_tokens`` (mean) through trl's ``log_metric`` when available."""
    lengths = [count_think_tokens(completion_text(c), tokenizer) for c in completions]
    if lengths:
        _log(kwargs, "completions/think_tokens", sum(lengths) / len(lengths))
    return [length_penalty(n, budget) for n in lengths]


def _with_parser(func: RewardFunc, parser: str) -> RewardFunc:
    """``func`` bound to one answer parser, still named ``func`` (trl logs rewards by name)."""
    return functools.update_wrapper(functools.partial(func, parser=parser), func)


def build_reward_funcs(grpo_cfg: Any, tokenizer: Any | None = None) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions with a non-zero weight, and their weights, in the order
    F1, schema, format, length (the order of ``GRPOConfig.reward_weights``).

    Raises ValueError for a negative weight, for all weights zero, and for a length weight
    without ``think_token_budget``; warns about a length weight without a format weight.
    """
    parser = grpo_cfg.reward_parser
    answer_parser(parser)  # an unknown name fails here, not in the first rollout
    terms: list[tuple[str, float, RewardFunc | None]] = [
        ("reward_f1_weight", grpo_cfg.reward_f1_weight, _with_parser(f1_reward, parser)),
        ("reward_schema_weight", grpo_cfg.reward_schema_weight, _with_parser(schema_reward, parser)),
        ("reward_format_weight", grpo_cfg.reward_format_weight, format_reward),
        ("reward_length_weight", grpo_cfg.reward_length_weight, None),
    ]
    funcs: list[RewardFunc] = []
    weights: list[float] = []
    for key, weight, func in terms:
        if weight < 0:
            raise ValueError(f"grpo.{key} must be >= 0 (the length term is already a penalty), got {weight}")
        if weight == 0:
            continue
        if func is None:
            budget = grpo_cfg.think_token_budget
            if budget is None:
                raise ValueError("grpo.reward_length_weight > 0 needs grpo.think_token_budget (thinking tokens allowed)")
            func = functools.partial(length_reward, budget=int(budget), tokenizer=tokenizer)
        funcs.append(func)
        weights.append(float(weight))
    if not funcs:
        raise ValueError("every grpo.reward_*_weight is 0: GRPO needs at least one reward term")
    if grpo_cfg.reward_length_weight > 0 and grpo_cfg.reward_format_weight == 0:
        # Measured (docs/grpo.md): with only F1 + schema + length, a policy can drop the <think>
        # block altogether (0 thinking tokens, no penalty) when F1 does not depend on it.
        logger.warning(
            "grpo.reward_length_weight > 0 without grpo.reward_format_weight: nothing stops the policy from "
            "dropping the <think> block to avoid the length penalty; consider reward_format_weight=1"
        )
    return funcs, weights
