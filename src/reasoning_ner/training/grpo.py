"""Stage 3: reasoning enhancement with trl's ``GRPOTrainer``, starting from an SFT checkpoint.

``train_grpo(cfg, sft_model_dir, train_files, output_dir)`` samples the RL prompts
(:mod:`reasoning_ner.training.rl_data`), builds the rewards (:mod:`reasoning_ner.rewards`),
maps ``cfg.grpo`` onto trl's ``GRPOConfig`` (:func:`build_grpo_config`), trains (full or LoRA),
logs every metric to JSON (and TensorBoard when installed), draws PNG curves and exports the
final model as an ordinary Hugging Face directory with a model card that records the GRPO
settings. The pieces, shaped like trl's scripts: :mod:`.rl_data` (prompts), :mod:`.grpo_config`
(trainer config), :mod:`.grpo_report` (metrics, curves, model card) and :mod:`.run` (the command
line and the run steps SFT shares); this module is the run itself and its ``main``.

Layout of ``output_dir`` (the same as SFT's: ``model/`` is what the next stage loads)::

    model/                   the exported policy (training/export.py: LoRA merged, tokenizer,
                             generation config, README.md model card with the GRPO settings)
    checkpoints/             trainer checkpoints (every grpo.save_steps and at the end); a later
                             call resumes from the last one unless resume=False
    summary.json             everything train_grpo returns (written last: its presence = done)
    rl_data_stats.json       how the RL prompts were sampled
    metrics.jsonl            one JSON object per logging step (loss, reward and each term, kl,
                             completion and thinking length, clipping, parse rate)
    log_history.json         the trainer's whole log history
    plots/*.png              loss, reward, reward components, KL, completion length, clipping
    tensorboard/             only when tensorboard is installed (it is not in the CPU venv)

Run it as ``python -m reasoning_ner.training.grpo --model SFT_DIR --data FILE ... --out DIR``
(also under ``accelerate launch``), or ``rner train grpo``.

trl 1.16 facts this module relies on (checked in the installed source):

* ``GRPOConfig`` has **no** ``max_prompt_length``: prompts are never truncated by trl, so the RL
  sampler drops over-long prompts instead; ``grpo.max_prompt_length`` also sizes vLLM's context
  (``vllm_max_model_length = max_prompt_length + max_completion_length``).
* ``warmup_ratio`` is gone from transformers 5's ``TrainingArguments``: a float
  ``warmup_steps`` in [0, 1) is the ratio.
* ``gradient_checkpointing`` is a deprecated alias of ``activation_checkpointing``
  (transformers 5.24); we set the new name.
* ``loss_type`` defaults to ``"dapo"`` and ``beta`` to 0.0 in trl 1.16: both are set
  explicitly (``dr_grpo``, 0.04). ``scale_rewards`` defaults to ``"group"`` (std scaling, as the
  reference's trl applied since its config does not set it); Dr. GRPO proper would be "none".
* The generation batch (``per_device_train_batch_size * processes * steps_per_generation``,
  ``steps_per_generation`` defaulting to ``gradient_accumulation_steps``) must be divisible by
  ``num_generations``; ``per_device_train_batch_size`` counts *completions*, not prompts.
* Reward functions get ``log_metric`` / ``log_extra`` keyword arguments; ours log the parse
  rate and mean thinking tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, config_fingerprint
from ..metrics import Tally, prf, string_pairs
from ..parsing import parse_answer
from ..records import NERRecord, write_json
from ..rewards import build_reward_funcs, gold_pairs, reward_breakdown
# The trainer config lives in grpo_config.py; its names stay importable from here.
from .grpo_config import (  # noqa: F401
    GRPOError, apply_generation_settings, build_grpo_config, build_peft_config, grpo_config_kwargs, resolve_device,
)
from .grpo_report import (
    grpo_card_section, grpo_hyperparameters, json_safe, logging_callbacks, package_versions, plot_grpo_curves,
)
from .rl_data import RLDataError, build_rl_dataset
from .run import (
    RUN_ERRORS, add_config_options, add_run_options, config_from_args, gather_full_weights, is_main_process,
    read_lineage, refuse_lora_under_zero3, run_cli, train_with_resume,
)
from .runtime import deepspeed_launch
from .vllm_server import rollout_server

__all__ = [
    "GRPOError",
    "apply_generation_settings",
    "build_grpo_config",
    "build_peft_config",
    "evaluate_policy",
    "grpo_config_kwargs",
    "main",
    "resolve_device",
    "resolve_model_dir",
    "train_grpo",
]


# -------------------------------------------------------------------------------- evaluation


def evaluate_policy(
    model: Any,
    tokenizer: Any,
    records: Sequence[NERRecord],
    cfg: Config,
    max_new_tokens: int | None = None,
    budget: int | None = None,
) -> dict[str, Any]:
    """Greedy generations on ``records`` scored with the GRPO reward terms and the paper metric.

    Returns means over records: ``parse_rate``, ``schema_valid_rate``, ``f1_reward`` (mean
    per-sample F1), ``format_rate``, ``think_tokens`` (tokenizer tokens), ``length_term``
    (with ``budget``; 0 without), ``reward`` (the config's weighted sum of F1, schema, format and
    length terms) and the dataset-level paper ``micro_f1``; plus ``think_tokens_per_sample`` and
    three example generations.
    """
    g = cfg.grpo
    budget = budget if budget is not None else g.think_token_budget
    from .generate import generate, record_prompts

    prompts = record_prompts(records, cfg.prompt)
    outputs = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens or g.max_completion_length)
    tally = Tally()
    sums = {k: 0.0 for k in ("parsed", "schema", "f1", "format", "think_tokens", "length", "reward")}
    think_tokens: list[int] = []
    for rec, text in zip(records, outputs):
        gold = [(e.text, e.label) for e in rec.entities]
        b = reward_breakdown(text, gold, rec.schema, budget=budget, tokenizer=tokenizer, parser=g.reward_parser)
        sums["parsed"] += b.parsed
        sums["schema"] += b.schema
        sums["f1"] += b.f1
        sums["format"] += b.format
        sums["think_tokens"] += b.think_tokens
        think_tokens.append(b.think_tokens)
        sums["length"] += b.length
        sums["reward"] += b.total(g.reward_f1_weight, g.reward_schema_weight, g.reward_format_weight, g.reward_length_weight)
        pred = parse_answer(text)
        tally.add(string_pairs(pred.pairs()), string_pairs(gold_pairs(gold)))
    n = max(1, len(records))
    return {
        "n": len(records),
        "parse_rate": sums["parsed"] / n,
        "schema_valid_rate": sums["schema"] / n,
        "f1_reward": sums["f1"] / n,
        "format_rate": sums["format"] / n,
        "think_tokens": sums["think_tokens"] / n,
        "length_term": sums["length"] / n,
        "think_token_budget": budget,
        "reward": sums["reward"] / n,
        "micro_f1": prf(tally.tp, tally.n_pred, tally.n_gold)["f1"],
        "think_tokens_per_sample": think_tokens,
        "examples": [{"id": r.id, "output": o} for r, o in list(zip(records, outputs))[:3]],
    }


# -------------------------------------------------------------------------------------- train

_FINAL_KEYS = [
    "loss", "reward", "reward_std", "kl", "entropy", "completions/mean_length", "completions/clipped_ratio",
    "completions/parse_rate", "completions/think_tokens", "clip_ratio/region_mean", "frac_reward_zero_std",
]
_TRL_ARG_KEYS = [
    "loss_type", "epsilon", "epsilon_high", "beta", "scale_rewards", "num_generations", "num_iterations",
    "temperature", "learning_rate", "lr_scheduler_type", "warmup_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "generation_batch_size", "steps_per_generation", "max_completion_length",
    "max_steps", "num_train_epochs", "bf16", "use_vllm", "vllm_mode", "reward_weights", "seed",
]


@dataclass
class _GRPOSetup:
    """A built trainer and what the summary and the model card say about it."""

    trainer: Any
    tokenizer: Any
    args: Any
    reward_names: list[str]
    weights: list[float]
    data_stats: dict[str, Any]


def train_grpo(
    cfg: Config,
    sft_model_dir: str | os.PathLike[str],
    train_files: Iterable[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    lineage: dict[str, Any] | None = None,
    *,
    max_steps: int | None = None,
    device: str | None = None,
    datasets: Iterable[str] | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Train the SFT checkpoint with GRPO and export the policy to ``output_dir``.

    ``train_files``: canonical JSONL (training splits); the RL pool is sampled from them per
    ``grpo.rl_*`` (``datasets`` overrides ``grpo.rl_datasets``). ``max_steps`` overrides
    ``grpo.max_steps``. ``lineage`` (e.g. the data's ``lineage.json`` and the SFT summary) is
    copied into the summary and the model card. ``sft_model_dir`` may be the SFT output folder
    (its ``model/`` is used) or any Hugging Face model directory. Returns the summary also
    written to ``summary.json``; the layout is in the module docstring.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    sft_model_dir = str(resolve_model_dir(sft_model_dir))
    device = resolve_device(device)
    output_dir.mkdir(parents=True, exist_ok=True)
    # Server-mode rollouts: the server is up (or the step failed naming its URL) before the policy loads.
    with rollout_server(cfg, sft_model_dir, device, str(output_dir)):
        run = _build_grpo_trainer(cfg, sft_model_dir, train_files, output_dir, device, max_steps, datasets)
        trainer = run.trainer
        zero3 = refuse_lora_under_zero3(trainer, "grpo", cfg.grpo.finetune, GRPOError)
        train_started = time.perf_counter()
        result, resume_from = train_with_resume(trainer, output_dir / "checkpoints", resume)
        train_seconds = time.perf_counter() - train_started

    log_history = [{k: json_safe(v) for k, v in row.items()} for row in trainer.state.log_history]
    summary = _grpo_summary(cfg, run, result, log_history, sft_model_dir, output_dir, device, train_seconds, lineage)
    state_dict = gather_full_weights(trainer, zero3)
    trainer.accelerator.wait_for_everyone()
    if is_main_process(trainer):
        model_dir = output_dir / "model"
        _export_policy(cfg, run, model_dir, sft_model_dir, lineage, summary, state_dict)
        write_json(output_dir / "rl_data_stats.json", run.data_stats)
        write_json(output_dir / "log_history.json", log_history)
        summary["model_dir"] = str(model_dir)
        summary["resumed_from"] = resume_from
        summary["plots"] = plot_grpo_curves(log_history, output_dir / "plots")
        summary["total_seconds"] = round(time.perf_counter() - started, 2)
        write_json(output_dir / "summary.json", summary)  # last: its presence means the run completed
    trainer.accelerator.wait_for_everyone()
    return summary


def _policy_dtype(cfg: Config, device: str) -> str:
    """fp32 master weights for full fine-tuning (bf16 then runs as autocast), as SFT does; LoRA and
    DeepSpeed (which keeps its own fp32 copy) load ``model.dtype``."""
    if device == "cpu" or (cfg.grpo.finetune == "full" and not deepspeed_launch()):
        return "float32"
    return cfg.model.dtype


def _build_grpo_trainer(
    cfg: Config,
    sft_model_dir: str,
    train_files: Iterable[str | os.PathLike[str]],
    output_dir: Path,
    device: str,
    max_steps: int | None,
    datasets: Iterable[str] | None,
) -> _GRPOSetup:
    """Policy, rewards, RL prompts and ``GRPOConfig`` assembled into trl's ``GRPOTrainer``."""
    import transformers
    from trl import GRPOTrainer

    from ..modeling import load_model_and_tokenizer

    transformers.set_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(
        sft_model_dir, dtype=_policy_dtype(cfg, device), trust_remote_code=cfg.model.trust_remote_code
    )
    reward_funcs, weights = build_reward_funcs(cfg.grpo, tokenizer)
    reward_names = [getattr(getattr(f, "func", f), "__name__", type(f).__name__) for f in reward_funcs]
    args = build_grpo_config(cfg, output_dir, reward_weights=weights, device=device, max_steps=max_steps)
    if cfg.grpo.rl_selection == "partly_right" and device == "cuda":
        model.to(args.device)  # the selection decodes the pool greedily: on this process's GPU, not the CPU
    dataset, data_stats = build_rl_dataset(
        cfg, train_files, tokenizer=tokenizer, datasets=datasets, policy=(model, tokenizer)
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=build_peft_config(cfg),
        callbacks=logging_callbacks(output_dir),
    )
    apply_generation_settings(trainer, cfg, device)
    return _GRPOSetup(trainer, tokenizer, args, reward_names, weights, data_stats)


def _grpo_summary(
    cfg: Config,
    run: _GRPOSetup,
    result: Any,
    log_history: list[dict[str, Any]],
    sft_model_dir: str,
    output_dir: Path,
    device: str,
    train_seconds: float,
    lineage: dict[str, Any] | None,
) -> dict[str, Any]:
    """What ``summary.json`` records; rank 0 adds the paths, plots and total time after exporting."""
    train_rows = [row for row in log_history if "reward" in row]
    keys = _FINAL_KEYS + [f"rewards/{n}/mean" for n in run.reward_names]
    return {
        "stage": "grpo",
        "sft_model_dir": sft_model_dir,
        "output_dir": str(output_dir),
        "device": device,
        "profile": cfg.profile,
        "finetune": cfg.grpo.finetune,
        "reward_terms": dict(zip(run.reward_names, run.weights)),
        "think_token_budget": cfg.grpo.think_token_budget,
        "global_steps": run.trainer.state.global_step,
        "train_seconds": round(train_seconds, 2),
        "total_seconds": None,
        "train_loss": json_safe(result.training_loss),
        "first_metrics": {k: train_rows[0][k] for k in keys if train_rows and train_rows[0].get(k) is not None},
        "final_metrics": {k: train_rows[-1][k] for k in keys if train_rows and train_rows[-1].get(k) is not None},
        "rl_data": run.data_stats,
        "trl_args": {k: getattr(run.args, k) for k in _TRL_ARG_KEYS},
        "versions": package_versions(),
        "lineage": lineage,
        "config": json.loads(config_fingerprint(cfg)),
    }


def _export_policy(
    cfg: Config,
    run: _GRPOSetup,
    model_dir: Path,
    sft_model_dir: str,
    lineage: dict[str, Any] | None,
    summary: dict[str, Any],
    state_dict: dict[str, Any] | None,
) -> None:
    """The trained policy (LoRA merged) as a Hugging Face directory whose card has a GRPO section."""
    from .export import export_model, merge_lora

    trainer = run.trainer
    policy = merge_lora(trainer.accelerator.unwrap_model(trainer.model))
    export_model(
        policy,
        run.tokenizer,
        model_dir,
        base_model=sft_model_dir,
        stage="GRPO",
        datasets=list(run.data_stats["sampled"]),
        lineage=lineage,
        hyperparameters=grpo_hyperparameters(cfg, run.args, run.reward_names, run.weights),
        metrics=summary["final_metrics"],
        state_dict=state_dict,
        max_new_tokens=cfg.grpo.max_completion_length,
    )
    card = model_dir / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + "\n" + grpo_card_section(summary), encoding="utf-8")


def resolve_model_dir(path: str | os.PathLike[str]) -> Path:
    """A model directory: ``path`` itself, or ``path/model`` for an SFT/GRPO output folder."""
    p = Path(path)
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():
        return p / "model"
    raise GRPOError(f"{p} is not a model directory (no config.json in it or in {p / 'model'}); pass the SFT output")


# --------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """``python -m reasoning_ner.training.grpo``: a thin entry point for ``accelerate launch``."""
    parser = argparse.ArgumentParser(prog="python -m reasoning_ner.training.grpo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="SFT checkpoint (a Hugging Face directory).")
    parser.add_argument("--data", required=True, nargs="+", help="Canonical JSONL training files (RL pool).")
    parser.add_argument("--out", required=True, help="Output directory for the GRPO policy.")
    add_config_options(parser)
    parser.add_argument("--max-steps", type=int, default=None, help="Override grpo.max_steps.")
    add_run_options(parser)
    ns = parser.parse_args(argv)

    def train() -> dict[str, Any]:
        cfg = config_from_args(ns)
        lineage = read_lineage(ns.lineage)
        return train_grpo(cfg, ns.model, ns.data, ns.out, lineage=lineage, max_steps=ns.max_steps, resume=not ns.no_resume)

    code, summary = run_cli(train, (RUN_ERRORS + (GRPOError, RLDataError), 2))
    if summary:
        keys = ("model_dir", "global_steps", "train_seconds", "final_metrics")
        print(json.dumps({k: summary.get(k) for k in keys}, indent=2, default=str))
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
