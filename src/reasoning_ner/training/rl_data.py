"""The RL data sampler: which prompts GRPO trains on.

Sampling follows the reference's ``sample_grpo.py``:

1. Records are grouped by source dataset (the record's ``dataset`` field).
2. Each dataset's size is **capped** (``grpo.rl_per_dataset_cap``, 10,000 in the paper)
   *before* proportions are computed, so one huge dataset cannot dominate the mix.
3. Dataset ``d`` gets ``total * capped_d / sum(capped)`` of the ``grpo.rl_sample_size`` prompts,
   drawn without replacement from a seeded shuffle of the whole dataset.
4. The result is shuffled with the same seed.

Two deliberate differences from the reference: quotas are rounded with the largest-remainder
method so they add up to exactly the requested total (the reference floors each quota with
``int()``, losing up to one prompt per dataset); and every dataset draws from its own random
stream derived from ``(seed, dataset name)``, so adding a dataset to the pool does not change
which records the others contribute.

Selection (``grpo.rl_selection``): ``random`` trains on that sample; ``partly_right`` samples a
pool of ``grpo.rl_pool_factor`` x the total the same way, and the policy picks the total from it by
its greedy answers' F1 (:mod:`reasoning_ner.training.rl_select`: prompts whose F1 reward can vary
within a GRPO group first).

Leakage guards: the zero-shot evaluation datasets (config ``data.zero_shot_datasets``; the
reference leaked MIT Movie/Restaurant into RL) are excluded by default and refused with an
error when requested, and ``test``-split records are refused.

Prompt format: ``prompt`` is a **plain string**, the full ChatML text up to and including the
generation prompt (``<|im_start|>assistant\\n``), built by :func:`reasoning_ner.prompt.chatml`
exactly as SFT, evaluation and serving build it. Why not conversational messages: (1) the policy
then sees byte-identical prompt text in SFT and RL whatever chat template the tokenizer ships
(hub Qwen3 templates carry thinking-mode logic that a ``messages`` prompt would go through);
(2) the completions arrive as plain strings, which is what the parser takes. The rewards accept
both forms anyway.

Prompt length: trl 1.16's ``GRPOConfig`` has **no** ``max_prompt_length`` (older trl
truncated prompts from the left, which would cut the instruction). With a tokenizer, prompts
longer than ``grpo.max_prompt_length`` tokens are dropped here, before sampling, so the total
is still honoured and no prompt is ever truncated.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..prompt import chatml, render_prompt
from ..records import NERRecord, read_records
from ..rewards import GOLD_COLUMN, SCHEMA_COLUMN

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

__all__ = [
    "RLDataError",
    "RLSample",
    "allocate_quotas",
    "build_rl_dataset",
    "rl_features",
    "rl_row",
    "sample_records",
]

REFUSED_SPLITS = frozenset({"test"})


class RLDataError(ValueError):
    """The RL pool cannot be built as asked; the message says why and how to fix it."""


@dataclass
class RLSample:
    """The sampled records and how they were chosen (written next to the model as provenance)."""

    records: list[NERRecord]
    stats: dict[str, Any] = field(default_factory=dict)


def _stream(seed: int, name: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def allocate_quotas(sizes: dict[str, int], total: int, cap: int | None) -> dict[str, int]:
    """Per-dataset quotas: proportional to ``min(size, cap)``, largest remainder, summing to
    ``min(total, sum(sizes))``; no quota exceeds its dataset's size."""
    if total < 0:
        raise RLDataError(f"RL sample size must be >= 0, got {total}")
    if cap is not None and cap < 1:
        raise RLDataError(f"per-dataset cap must be >= 1 (or None for no cap), got {cap}")
    capped = {name: min(n, cap) if cap is not None else n for name, n in sizes.items()}
    denominator = sum(capped.values())
    if denominator == 0:
        return {name: 0 for name in sizes}
    target = min(total, sum(sizes.values()))
    exact = {name: total * c / denominator for name, c in capped.items()}
    quotas = {name: min(int(x), sizes[name]) for name, x in exact.items()}
    # Hand out what is left by largest remainder (ties by name, so it is deterministic).
    order = sorted(sizes, key=lambda name: (-(exact[name] - int(exact[name])), name))
    while sum(quotas.values()) < target:
        progressed = False
        for name in order:
            if sum(quotas.values()) >= target:
                break
            if quotas[name] < sizes[name]:
                quotas[name] += 1
                progressed = True
        if not progressed:  # pragma: no cover - impossible: target <= sum(sizes)
            break
    return quotas


def sample_records(
    records: Iterable[NERRecord],
    total: int,
    cap: int | None,
    seed: int,
    datasets: Iterable[str] | None = None,
    zero_shot: Iterable[str] = (),
) -> RLSample:
    """Proportional, capped, seeded sample of ``records`` (see the module docstring).

    ``datasets``: the source datasets to use (None = every dataset present that is not
    zero-shot). Requesting a zero-shot dataset raises :class:`RLDataError`; zero-shot records
    present in the input but not requested are dropped and counted in ``stats``.
    """
    zero_shot = set(zero_shot)
    wanted = set(datasets) if datasets is not None else None
    if wanted is not None:
        leaked = sorted(wanted & zero_shot)
        if leaked:
            raise RLDataError(
                f"zero-shot evaluation dataset(s) {leaked} cannot be used for RL: they are held out for the "
                "zero-shot benchmark (the reference paper leaked MIT Movie/Restaurant into RL; this project does "
                "not). Remove them from grpo.rl_datasets."
            )
    by_dataset: dict[str, list[NERRecord]] = {}
    excluded: Counter[str] = Counter()
    for rec in records:
        if rec.split in REFUSED_SPLITS:
            raise RLDataError(
                f"record {rec.id} is from the {rec.split!r} split of {rec.dataset or '?'}; RL must not train on "
                "evaluation data. Pass training splits (e.g. <prepared>/conll2003/train.jsonl)."
            )
        name = rec.dataset or "unknown"
        if name in zero_shot:
            excluded[f"{name} (zero-shot)"] += 1
            continue
        if wanted is not None and name not in wanted:
            excluded[f"{name} (not in rl_datasets)"] += 1
            continue
        by_dataset.setdefault(name, []).append(rec)
    if wanted is not None:
        missing = sorted(wanted - set(by_dataset))
        if missing:
            raise RLDataError(
                f"RL dataset(s) {missing} have no records in the given files; pass their training files or "
                "change grpo.rl_datasets"
            )
    if not by_dataset:
        raise RLDataError("no records left for RL after excluding zero-shot datasets and unrequested datasets")

    sizes = {name: len(recs) for name, recs in sorted(by_dataset.items())}
    quotas = allocate_quotas(sizes, total, cap)
    sampled: list[NERRecord] = []
    for name in sorted(by_dataset):
        pool = sorted(by_dataset[name], key=lambda r: r.id)  # input order must not matter
        _stream(seed, name).shuffle(pool)
        sampled.extend(pool[: quotas[name]])
    random.Random(seed).shuffle(sampled)
    stats = {
        "requested_total": total,
        "sampled_total": len(sampled),
        "per_dataset_cap": cap,
        "seed": seed,
        "available": sizes,
        "capped": {name: min(n, cap) if cap is not None else n for name, n in sizes.items()},
        "sampled": quotas,
        "excluded": dict(sorted(excluded.items())),
    }
    return RLSample(sampled, stats)


def rl_row(record: NERRecord, prompt_style: str) -> dict[str, Any]:
    """One RL example: the ChatML prompt plus the columns the rewards need."""
    return {
        "prompt": chatml(render_prompt(record.text, record.schema, prompt_style)),
        GOLD_COLUMN: [[e.text, e.label] for e in record.entities],
        SCHEMA_COLUMN: list(record.schema),
        "id": record.id,
        "dataset": record.dataset,
        "text": record.text,
    }


def rl_features() -> Any:
    """Explicit Arrow types: an all-empty ``gold`` column would otherwise be inferred as null."""
    from datasets import Features, Sequence, Value

    return Features(
        {
            "prompt": Value("string"),
            GOLD_COLUMN: Sequence(Sequence(Value("string"))),
            SCHEMA_COLUMN: Sequence(Value("string")),
            "id": Value("string"),
            "dataset": Value("string"),
            "text": Value("string"),
        }
    )


def _select_from_pool(cfg: Config, pool: RLSample, policy: tuple[Any, Any], total: int, seed: int) -> RLSample:
    """``total`` records of the sampled ``pool`` chosen by the policy (partly right first); the
    top-level stats then describe what GRPO trains on, the pool and the ranking go under ``selection``."""
    from .rl_select import select_partly_right

    model, tokenizer = policy
    selection = select_partly_right(model, tokenizer, pool.records, cfg, total, seed)
    chosen = list(selection.records)
    random.Random(seed).shuffle(chosen)  # rank order must not become the training order
    per_dataset = Counter(r.dataset or "unknown" for r in chosen)
    stats = {
        **pool.stats,
        "requested_total": total,
        "sampled_total": len(chosen),
        "sampled": {name: per_dataset[name] for name in pool.stats["sampled"]},
        "selection": {
            "method": "partly_right",
            "pool_factor": cfg.grpo.rl_pool_factor,
            "pool_requested": pool.stats["requested_total"],
            "pool_sampled": pool.stats["sampled"],
            **selection.stats,
        },
    }
    return RLSample(chosen, stats)


def build_rl_dataset(
    cfg: Config,
    train_files: Iterable[str | Path],
    tokenizer: Any | None = None,
    datasets: Iterable[str] | None = None,
    total: int | None = None,
    seed: int | None = None,
    policy: tuple[Any, Any] | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Read canonical JSONL files, drop over-long prompts (with a tokenizer), sample, and build
    the ``datasets.Dataset`` GRPO trains on. Returns ``(dataset, stats)``.

    Defaults come from the config: ``grpo.rl_datasets``, ``grpo.rl_sample_size``,
    ``grpo.rl_per_dataset_cap``, ``seed``, ``grpo.max_prompt_length``, ``prompt.style``.
    With ``grpo.rl_selection = partly_right`` the sample is a pool of ``grpo.rl_pool_factor`` x
    the total, from which ``policy`` (``(model, tokenizer)``) picks the total by its greedy answers'
    F1 (:mod:`.rl_select`); the stats then carry a ``selection`` entry.
    """
    from datasets import Dataset

    select = cfg.grpo.rl_selection == "partly_right"
    if select and policy is None:
        raise RLDataError(
            "grpo.rl_selection=partly_right ranks the RL pool by the policy's greedy answers, so it needs the policy "
            "(policy=(model, tokenizer)); set grpo.rl_selection=random to sample without one"
        )
    files = [Path(f) for f in train_files]
    if not files:
        raise RLDataError("no RL training files given")
    for f in files:
        if not f.is_file():
            raise RLDataError(f"RL training file {f} does not exist")
    records: list[NERRecord] = [rec for f in files for rec in read_records(f)]
    style = cfg.prompt.style
    too_long: Counter[str] = Counter()
    if tokenizer is not None:
        limit = cfg.grpo.max_prompt_length
        kept = []
        prompts = [chatml(render_prompt(r.text, r.schema, style)) for r in records]
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []
        for rec, n in zip(records, lengths):
            if n > limit:
                too_long[rec.dataset or "unknown"] += 1
            else:
                kept.append(rec)
        records = kept
    total = cfg.grpo.rl_sample_size if total is None else total
    seed = cfg.seed if seed is None else seed
    sample = sample_records(
        records,
        total=total * cfg.grpo.rl_pool_factor if select else total,
        cap=cfg.grpo.rl_per_dataset_cap,
        seed=seed,
        datasets=cfg.grpo.rl_datasets if datasets is None else datasets,
        zero_shot=cfg.data.zero_shot_datasets,
    )
    if select and policy is not None:
        sample = _select_from_pool(cfg, sample, policy, total, seed)
    if not sample.records:
        raise RLDataError("the RL sample is empty (rl_sample_size 0, or every prompt is over max_prompt_length)")
    stats = {
        **sample.stats,
        "files": [str(f) for f in files],
        "prompt_style": style,
        "dropped_over_max_prompt_length": dict(too_long),
        "max_prompt_length": cfg.grpo.max_prompt_length if tokenizer is not None else None,
    }
    rows = [rl_row(r, style) for r in sample.records]
    dataset = Dataset.from_list(rows, features=rl_features())
    return dataset, stats
