"""RL prompt selection: train GRPO on the prompts whose F1 reward can differ within a group.

GRPO's advantage is a completion's reward minus its group's mean. A prompt the policy always
answers wholly right (F1 1) or wholly wrong (F1 0) gives every completion the same F1 reward and
so no gradient from the F1 term. The policy's greedy answer is a cheap proxy for where its
samples land: a partly right greedy answer (0 < F1 < 1) says the samples will likely differ.

Ranks, best first (``grpo.rl_selection = partly_right``):

0. partly right: 0 < F1 < 1;
1. wrong, with gold entities: F1 0 (an unparseable answer is F1 0, as the reward scores it),
   sampling at temperature may still hit some entities;
2. fully right: F1 1, little left to learn;
3. no gold entities: the reference's F1 of empty gold is 0 whatever the answer, so the F1 term
   carries no signal at all (the schema reward still does).

Measured on the tiny model (CoNLL-2003 train, 2048 greedy answers of the SFT model): 8% rank 0,
6% rank 2, 86% F1 0 (ranks 1 and 3), so a random sample is mostly prompts without F1 signal.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..records import NERRecord
from ..rewards import answer_f1, answer_parser
from .generate import generate, record_prompts

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["RANKS", "Selection", "greedy_answers", "rank_of", "rank_records", "record_f1", "select_partly_right"]

#: Rank names, index = rank (lower is preferred).
RANKS: tuple[str, ...] = ("partly_right", "wrong_with_gold", "fully_right", "no_gold")


@dataclass
class Selection:
    """The chosen records, best rank first, and how they were chosen."""

    records: list[NERRecord]
    stats: dict[str, Any] = field(default_factory=dict)


def record_f1(record: NERRecord, generation: str, parser: str = "reference") -> float:
    """The F1 reward term of ``generation`` for ``record``, computed exactly as the reward does."""
    result = answer_parser(parser)(generation, list(record.schema))
    return answer_f1(result, [[e.text, e.label] for e in record.entities], parser)


def rank_of(record: NERRecord, f1: float | None, unparsed_first: bool = False) -> int:
    """The record's rank (see the module docstring). No gold is checked first: its F1 is 0 whatever
    the answer, which says nothing about the policy being wrong. ``unparsed_first``: a greedy answer
    that does not parse (``f1`` is None) ranks with the partly right ones."""
    if f1 is None:
        if unparsed_first:
            return 0
        f1 = 0.0
    if not record.entities:
        return 3
    if f1 >= 1.0:
        return 2
    return 0 if f1 > 0.0 else 1


def rank_records(
    records: Sequence[NERRecord],
    generations: Sequence[str],
    total: int,
    seed: int,
    parser: str = "reference",
    unparsed_first: bool = False,
) -> Selection:
    """The first ``total`` records by rank; within a rank a seeded shuffle.

    Each rank is sorted by record id before its shuffle (its own stream from ``(seed, rank)``), so
    the same records and generations select the same prompts whatever their input order.
    """
    if len(records) != len(generations):
        raise ValueError(f"{len(records)} records but {len(generations)} generations")
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    parse = answer_parser(parser)
    results = [parse(g, list(r.schema)) for r, g in zip(records, generations)]  # once: the rank and the F1 read it
    parsed = [res.ok for res in results]
    f1s = [answer_f1(res, [[e.text, e.label] for e in r.entities], parser) for r, res in zip(records, results)]
    by_rank: list[list[NERRecord]] = [[] for _ in RANKS]
    for rec, f1, ok in zip(records, f1s, parsed):
        by_rank[rank_of(rec, f1 if ok else None, unparsed_first)].append(rec)
    ordered: list[tuple[int, NERRecord]] = []
    for rank, recs in enumerate(by_rank):
        recs.sort(key=lambda r: r.id)
        random.Random(f"{seed}:{RANKS[rank]}").shuffle(recs)  # str seeds are hashed deterministically
        ordered.extend((rank, r) for r in recs)
    chosen = ordered[:total]
    chosen_ranks = Counter(rank for rank, _ in chosen)
    stats = {
        "pool_size": len(records),
        "total": total,
        "selected_total": len(chosen),
        "seed": seed,
        "parser": parser,
        "unparsed_first": unparsed_first,
        "pool_unparsed": parsed.count(False),
        "pool_mean_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "pool_per_rank": {name: len(recs) for name, recs in zip(RANKS, by_rank)},
        "selected_per_rank": {name: chosen_ranks[rank] for rank, name in enumerate(RANKS)},
    }
    return Selection([r for _, r in chosen], stats)


#: Greedy answers of the last few pools, by (policy weights, tokenizer, prompts, length). Two GRPO
#: runs from one SFT checkpoint with one seed rank the same pool (the two learning checks; the bench's
#: experiments of a seed): the second reuses the answers instead of decoding 2048 prompts again
#: (~45 s on 2 cores).
_ANSWERS: OrderedDict[str, list[str]] = OrderedDict()
_ANSWERS_KEPT = 4
#: Above this many parameters, or off the CPU, hashing the weights is not cheap next to decoding
#: (and a GPU run ranks its pool once): no memo.
_MEMO_MAX_PARAMETERS = 50_000_000


def _answers_key(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> str | None:
    """A digest of everything greedy decoding depends on, or None where the policy is too large to hash."""
    import torch

    tensors = list(model.state_dict().items())
    if any(t.device.type != "cpu" for _, t in tensors) or sum(t.numel() for _, t in tensors) > _MEMO_MAX_PARAMETERS:
        return None
    h = hashlib.blake2b(digest_size=20)
    for name, t in tensors:
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy())
    h.update(f"{type(tokenizer).__name__}:{len(tokenizer)}:{tokenizer.eos_token}:{max_new_tokens}".encode())
    for prompt in prompts:
        h.update(prompt.encode())
        h.update(b"\0")
    return h.hexdigest()


def greedy_answers(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_new_tokens: int,
    batch_size: int = 32,
) -> tuple[list[str], bool]:
    """The policy's greedy answers to ``prompts`` and whether they came from the memo (same weights,
    tokenizer, prompts and length as a recent call: greedy decoding would give the same text)."""
    key = _answers_key(model, tokenizer, prompts, max_new_tokens)
    if key is not None and key in _ANSWERS:
        _ANSWERS.move_to_end(key)
        return list(_ANSWERS[key]), True
    answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if key is not None:
        _ANSWERS[key] = list(answers)
        while len(_ANSWERS) > _ANSWERS_KEPT:
            _ANSWERS.popitem(last=False)
    return answers, False


def select_partly_right(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[NERRecord],
    cfg: Config,
    total: int,
    seed: int,
    batch_size: int = 32,
) -> Selection:
    """Decode ``records`` greedily with the policy (``grpo.max_completion_length`` tokens, the
    rollouts' length, so a long answer is not cut and scored 0 here when GRPO would see it
    whole; :func:`greedy_answers`, memoized), then :func:`rank_records` with the reward's parser
    (``grpo.reward_parser``)."""
    started = time.perf_counter()
    prompts = record_prompts(records, cfg.prompt)
    generations, reused = greedy_answers(model, tokenizer, prompts, cfg.grpo.max_completion_length, batch_size)
    decode_seconds = time.perf_counter() - started
    selection = rank_records(records, generations, total, seed, cfg.grpo.reward_parser, cfg.grpo.rl_unparsed_first)
    selection.stats["max_new_tokens"] = cfg.grpo.max_completion_length
    selection.stats["decode_seconds"] = round(decode_seconds, 2)
    selection.stats["answers_reused"] = reused
    return selection
