"""Stage 3: reasoning enhancement with trl's ``GRPOTrainer``, starting from an SFT checkpoint.

``train_grpo(cfg, sft_model_dir, train_files, output_dir)`` samples the RL prompts
(:mod:`reasoning_ner.training.rl_data`), builds the rewards (:mod:`reasoning_ner.rewards`),
maps ``cfg.grpo`` onto trl's ``GRPOConfig`` (:func:`build_grpo_config`), trains (full or LoRA),
logs every metric to JSON (and TensorBoard when installed), draws PNG curves and exports the
final model as an ordinary Hugging Face directory with a model card that records the GRPO
settings.

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
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, config_fingerprint, load_config
from ..metrics import Tally, prf, string_pairs
from ..parsing import parse_answer
from ..records import NERRecord, write_json
from ..rewards import build_reward_funcs, gold_pairs, reward_breakdown
from .rl_data import build_rl_dataset
from .runtime import deepspeed_launch, last_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from transformers import TrainerCallback
    from trl import GRPOConfig

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

#: Curves drawn after training: (file name, title, log keys).
PLOTS: list[tuple[str, str, list[str]]] = [
    ("loss.png", "GRPO loss", ["loss"]),
    ("reward.png", "GRPO reward (weighted sum) and its std", ["reward", "reward_std"]),
    (
        "reward_components.png",
        "GRPO reward components (unweighted means)",
        [
            "rewards/f1_reward/mean",
            "rewards/schema_reward/mean",
            "rewards/format_reward/mean",
            "rewards/length_reward/mean",
            "completions/parse_rate",
        ],
    ),
    ("kl.png", "KL to the reference (SFT) policy", ["kl"]),
    (
        "completion_length.png",
        "Completion and thinking length (tokens)",
        ["completions/mean_length", "completions/think_tokens"],
    ),
    ("clipping.png", "Clipping", ["completions/clipped_ratio", "clip_ratio/region_mean"]),
]


class GRPOError(ValueError):
    """GRPO cannot run as configured; the message says what to change."""


def resolve_device(device: str | None = None) -> str:
    """``cuda`` when a GPU is visible (or asked for), else ``cpu``."""
    if device is not None:
        if device not in {"cuda", "cpu"}:
            raise GRPOError(f"device must be cuda or cpu, got {device!r}")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _tensorboard_available() -> bool:
    try:
        from transformers.integrations import is_tensorboard_available
    except ImportError:  # pragma: no cover
        return False
    return bool(is_tensorboard_available())


# --------------------------------------------------------------------------------- the config


def grpo_config_kwargs(
    cfg: Config,
    output_dir: str | os.PathLike[str],
    reward_weights: Sequence[float],
    device: str | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """``cfg.grpo`` mapped onto ``GRPOConfig`` keyword arguments (every name checked against trl 1.16).

    ``device='cpu'`` forces fp32 (bf16 is a GPU setting here) and refuses vLLM; ``'cuda'``
    keeps the profile's bf16, activation checkpointing and vLLM settings.
    """
    g = cfg.grpo
    device = resolve_device(device)
    on_gpu = device == "cuda"
    if g.use_vllm and not on_gpu:
        raise GRPOError(
            "grpo.use_vllm is true but no GPU is available: vLLM rollouts need CUDA (and the vllm package, which "
            "lives in the GPU images only). Set grpo.use_vllm=false to generate with transformers on CPU."
        )
    per_step = g.per_device_train_batch_size * g.gradient_accumulation_steps
    if per_step % g.num_generations:
        raise GRPOError(
            f"grpo.per_device_train_batch_size x gradient_accumulation_steps = {per_step} completions per "
            f"generation batch is not divisible by grpo.num_generations = {g.num_generations} (trl needs whole "
            "prompt groups; per_device_train_batch_size counts completions, not prompts)"
        )
    checkpointing = bool(g.gradient_checkpointing)
    kwargs: dict[str, Any] = {
        "output_dir": str(Path(output_dir) / "checkpoints"),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        # optimisation
        "learning_rate": g.learning_rate,
        "lr_scheduler_type": g.lr_scheduler_type,
        "warmup_steps": g.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        "weight_decay": cfg.grpo.weight_decay,
        "max_grad_norm": cfg.grpo.max_grad_norm,
        "num_train_epochs": g.num_train_epochs,
        "max_steps": g.max_steps if max_steps is None else max_steps,
        "per_device_train_batch_size": g.per_device_train_batch_size,
        "gradient_accumulation_steps": g.gradient_accumulation_steps,
        # GRPO
        "loss_type": g.loss_type,
        "epsilon": g.epsilon,
        "epsilon_high": g.epsilon_high,
        "beta": g.beta,
        "num_generations": g.num_generations,
        "num_iterations": g.num_iterations,
        "temperature": g.temperature,
        "max_completion_length": g.max_completion_length,
        "scale_rewards": cfg.grpo.scale_rewards,
        "mask_truncated_completions": cfg.grpo.mask_truncated_completions,
        "reward_weights": [float(w) for w in reward_weights],
        "remove_unused_columns": False,  # the rewards read gold and schema
        "disable_dropout": True,  # policy and reference log-probs must agree on identical inputs
        # precision and memory
        "use_cpu": not on_gpu,
        "bf16": bool(g.bf16 and on_gpu),
        "activation_checkpointing": checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
        # rollouts
        "use_vllm": bool(g.use_vllm),
        "vllm_mode": g.vllm_mode,
        "vllm_max_model_length": g.max_prompt_length + g.max_completion_length,
        # logging and saving
        "logging_steps": g.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": g.save_steps,
        "save_total_limit": cfg.grpo.save_total_limit,
        "save_only_model": False,
        "report_to": "none",  # JSON always; TensorBoard through an explicit callback when installed
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if not g.use_vllm and on_gpu and g.generation_cache == "static":
        kwargs["cache_implementation"] = "static"
        # One cache size for every step (the RL sampler drops prompts over max_prompt_length), so a
        # compiled decode step (grpo.compile_generation) is traced once, not per prompt length.
        kwargs["generation_kwargs"] = {"max_cache_len": g.max_prompt_length + g.max_completion_length}
    if g.use_vllm:
        if g.vllm_mode == "server":
            base_url = cfg.grpo.vllm_server_base_url
            if base_url:
                kwargs["vllm_server_base_url"] = base_url
            else:
                kwargs["vllm_server_host"] = cfg.grpo.vllm_server_host
                kwargs["vllm_server_port"] = int(cfg.grpo.vllm_server_port)
            kwargs["vllm_server_timeout"] = float(cfg.grpo.vllm_server_timeout)
        else:  # colocate
            kwargs["vllm_gpu_memory_utilization"] = float(cfg.grpo.vllm_gpu_memory_utilization)
            kwargs["vllm_tensor_parallel_size"] = int(cfg.grpo.vllm_tensor_parallel_size)
            kwargs["vllm_enable_sleep_mode"] = bool(cfg.grpo.vllm_enable_sleep_mode)
    return kwargs


def build_grpo_config(
    cfg: Config,
    output_dir: str | os.PathLike[str],
    reward_weights: Sequence[float] | None = None,
    device: str | None = None,
    max_steps: int | None = None,
) -> GRPOConfig:
    """The trl ``GRPOConfig`` for ``cfg`` (reward weights default to the config's non-zero terms)."""
    from trl import GRPOConfig

    if reward_weights is None:
        _, reward_weights = build_reward_funcs(cfg.grpo)
    return GRPOConfig(**grpo_config_kwargs(cfg, output_dir, reward_weights, device, max_steps))


def apply_generation_settings(trainer: Any, cfg: Config, device: str) -> bool:
    """``grpo.compile_generation``: let transformers compile the decode step (CUDA graphs).

    trl builds its ``GenerationConfig`` with ``disable_compile=True``; with a static cache
    (``grpo.generation_cache``) transformers compiles the forward of every decoding step once
    that flag is off. Only for transformers rollouts on CUDA; returns whether it applied.
    """
    g = cfg.grpo
    if not (g.compile_generation and device == "cuda" and not g.use_vllm):
        return False
    trainer.generation_config.disable_compile = False
    return True


def build_peft_config(cfg: Config) -> Any | None:
    """A LoRA config for ``grpo.finetune: lora``; None for full fine-tuning."""
    if cfg.grpo.finetune != "lora":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=int(cfg.grpo.lora_r),
        lora_alpha=int(cfg.grpo.lora_alpha),
        lora_dropout=float(cfg.grpo.lora_dropout),
        target_modules=list(cfg.grpo.lora_target_modules),
        task_type="CAUSAL_LM",
    )


# ------------------------------------------------------------------------------- logging


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metrics_callback(path: Path) -> TrainerCallback:
    from transformers import TrainerCallback

    class JsonMetricsCallback(TrainerCallback):
        """Appends every trainer log (one JSON object per logging step) to ``metrics.jsonl``."""

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero and state.global_step == 0:  # a resumed run appends
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("", encoding="utf-8")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                row = {"step": state.global_step, "epoch": state.epoch, **{k: _json_safe(v) for k, v in logs.items()}}
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")

    return JsonMetricsCallback()


def _plot(log_history: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """PNG curves (training/plots.py) of every PLOTS group with at least one logged key."""
    from .plots import plot_curves

    written = []
    for name, title, keys in PLOTS:
        present = [k for k in keys if any(row.get(k) is not None for row in log_history)]
        if present:
            written.append(str(plot_curves(log_history, present, out_dir / name, title)))
    return written


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
        b = reward_breakdown(text, gold, rec.schema, budget=budget, tokenizer=tokenizer)
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


# ------------------------------------------------------------------------------------- export


def _hyperparameters(cfg: Config, trl_args: Any, reward_names: list[str], weights: list[float]) -> dict[str, Any]:
    """The GRPO settings recorded in the model card (what trl actually ran with)."""
    g = cfg.grpo
    return {
        "fine-tuning": g.finetune,
        "loss_type": trl_args.loss_type,
        "epsilon / epsilon_high": f"{trl_args.epsilon} / {trl_args.epsilon_high}",
        "beta (KL to the SFT policy)": trl_args.beta,
        "scale_rewards": trl_args.scale_rewards,
        "num_generations (group size)": trl_args.num_generations,
        "num_iterations (updates per rollout batch)": trl_args.num_iterations,
        "temperature": trl_args.temperature,
        "learning rate / schedule / warmup": f"{trl_args.learning_rate:g} / {g.lr_scheduler_type} / {g.warmup_ratio}",
        "per-device batch (completions) x grad accumulation": (
            f"{trl_args.per_device_train_batch_size} x {trl_args.gradient_accumulation_steps}"
        ),
        "generation batch (completions)": trl_args.generation_batch_size,
        "max prompt / completion tokens": f"{g.max_prompt_length} / {trl_args.max_completion_length}",
        "epochs / max_steps": f"{g.num_train_epochs} / {trl_args.max_steps}",
        "precision": "bf16" if trl_args.bf16 else "fp32",
        "rollouts": f"vLLM ({trl_args.vllm_mode})" if trl_args.use_vllm else (
            f"transformers generate ({trl_args.cache_implementation or 'dynamic'} cache"
            f"{', compiled decode' if trl_args.cache_implementation == 'static' and g.compile_generation else ''})"
        ),
        "reward": " + ".join(f"{w:g} x {n}" for n, w in zip(reward_names, weights)),
        "think token budget": g.think_token_budget,
        "seed": cfg.seed,
    }


def _card_extra(summary: dict[str, Any]) -> str:
    data = summary["rl_data"]
    sampled = ", ".join(f"`{k}` {v}" for k, v in data["sampled"].items())
    return f"""## GRPO

Reasoning enhancement with trl's `GRPOTrainer` (trl {summary['versions'].get('trl')}) from the SFT
checkpoint above: {summary['global_steps']} optimizer steps in {summary['train_seconds']:.0f} s on
{summary['device']}. Reward = {' + '.join(f'{w:g} x {n}' for n, w in summary['reward_terms'].items())}:
`f1_reward` is the per-sample micro-F1 of the parsed answer over (normalized span, label), 0 on a
parse failure and 0 for empty gold with an empty prediction (reference `safe_div`);
`schema_reward` is 1 iff the answer is valid JSON and every label is in the schema (it rewards
the correct empty answer); `format_reward` and `length_reward` are the optional format and
length-aware terms (`reasoning_ner.rewards`).

RL prompts: {data['sampled_total']} ({sampled}), proportional per dataset after capping each at
{data['per_dataset_cap']}, seed {data['seed']}; prompts over {data.get('max_prompt_length')} tokens dropped
({data.get('dropped_over_max_prompt_length')}). Final metrics are the last logging window of training
(rollouts at temperature {summary['trl_args']['temperature']}), not a held-out evaluation. Curves: `plots/`;
every logged value: `metrics.jsonl`; the sampling: `rl_data_stats.json`; everything: `summary.json` (next to `model/`).
"""


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("trl", "transformers", "torch", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:  # pragma: no cover
            pass
    return out


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
    import transformers
    from trl import GRPOTrainer

    from ..modeling import load_model_and_tokenizer
    from .export import export_model, merge_lora

    started = time.perf_counter()
    output_dir = Path(output_dir)
    sft_model_dir = str(resolve_model_dir(sft_model_dir))
    device = resolve_device(device)
    transformers.set_seed(cfg.seed)

    # fp32 master weights for full fine-tuning (bf16 then runs as autocast), as SFT does; LoRA and
    # DeepSpeed (which keeps its own fp32 copy) load model.dtype.
    dtype = cfg.model.dtype
    if device == "cpu" or (cfg.grpo.finetune == "full" and not deepspeed_launch()):
        dtype = "float32"
    model, tokenizer = load_model_and_tokenizer(sft_model_dir, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code)
    reward_funcs, weights = build_reward_funcs(cfg.grpo, tokenizer)
    reward_names = [getattr(getattr(f, "func", f), "__name__", type(f).__name__) for f in reward_funcs]
    dataset, data_stats = build_rl_dataset(cfg, train_files, tokenizer=tokenizer, datasets=datasets)
    args = build_grpo_config(cfg, output_dir, reward_weights=weights, device=device, max_steps=max_steps)

    metrics_path = output_dir / "metrics.jsonl"
    callbacks = [_metrics_callback(metrics_path)]
    if _tensorboard_available():  # pragma: no cover - tensorboard is not installed in the CPU venv
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(output_dir / "tensorboard"))))

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=build_peft_config(cfg),
        callbacks=callbacks,
    )
    apply_generation_settings(trainer, cfg, device)
    zero3 = bool(getattr(trainer, "is_deepspeed_enabled", False)) and getattr(
        getattr(trainer.accelerator.state, "deepspeed_plugin", None), "zero_stage", 0
    ) == 3
    if zero3 and cfg.grpo.finetune == "lora":
        raise GRPOError("grpo.finetune=lora with DeepSpeed ZeRO-3 is not supported (merging needs full weights)")
    train_started = time.perf_counter()
    resume_from = last_checkpoint(output_dir / "checkpoints") if resume else None
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_seconds = time.perf_counter() - train_started

    log_history = [{k: _json_safe(v) for k, v in row.items()} for row in trainer.state.log_history]
    train_rows = [row for row in log_history if "reward" in row]
    keys = _FINAL_KEYS + [f"rewards/{n}/mean" for n in reward_names]
    summary: dict[str, Any] = {
        "stage": "grpo",
        "sft_model_dir": sft_model_dir,
        "output_dir": str(output_dir),
        "device": device,
        "profile": cfg.profile,
        "finetune": cfg.grpo.finetune,
        "reward_terms": dict(zip(reward_names, weights)),
        "think_token_budget": cfg.grpo.think_token_budget,
        "global_steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 2),
        "total_seconds": None,
        "train_loss": _json_safe(result.training_loss),
        "first_metrics": {k: train_rows[0][k] for k in keys if train_rows and train_rows[0].get(k) is not None},
        "final_metrics": {k: train_rows[-1][k] for k in keys if train_rows and train_rows[-1].get(k) is not None},
        "rl_data": data_stats,
        "trl_args": {k: getattr(args, k) for k in _TRL_ARG_KEYS},
        "versions": _versions(),
        "lineage": lineage,
        "config": json.loads(config_fingerprint(cfg)),
    }

    # Under ZeRO-3 the full weights must be gathered on every rank (a collective) before rank 0 saves.
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if zero3 else None
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        model_dir = output_dir / "model"
        policy = merge_lora(trainer.accelerator.unwrap_model(trainer.model))
        export_model(
            policy,
            tokenizer,
            model_dir,
            base_model=sft_model_dir,
            stage="GRPO",
            datasets=list(data_stats["sampled"]),
            lineage=lineage,
            hyperparameters=_hyperparameters(cfg, args, reward_names, weights),
            metrics=summary["final_metrics"],
            state_dict=state_dict,
            max_new_tokens=cfg.grpo.max_completion_length,
        )
        card = model_dir / "README.md"
        card.write_text(card.read_text(encoding="utf-8") + "\n" + _card_extra(summary), encoding="utf-8")
        write_json(output_dir / "rl_data_stats.json", data_stats)
        write_json(output_dir / "log_history.json", log_history)
        summary["model_dir"] = str(model_dir)
        summary["resumed_from"] = resume_from
        summary["plots"] = _plot(log_history, output_dir / "plots")
        summary["total_seconds"] = round(time.perf_counter() - started, 2)
        write_json(output_dir / "summary.json", summary)  # last: its presence means the run completed
    trainer.accelerator.wait_for_everyone()
    return summary


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
    parser.add_argument("--config", default=None, help="params.yaml (default: ./params.yaml when present).")
    parser.add_argument("--profile", default=None, help="tiny-cpu, qwen3-1.7b or qwen3-8b.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value override.")
    parser.add_argument("--max-steps", type=int, default=None, help="Override grpo.max_steps.")
    parser.add_argument("--lineage", default=None, help="JSON file recorded in the summary and model card.")
    parser.add_argument("--no-resume", action="store_true", help="Ignore existing checkpoints in <out>/checkpoints.")
    ns = parser.parse_args(argv)
    from ..config import ConfigError
    from ..modeling import ModelLoadError
    from ..records import RecordError
    from .rl_data import RLDataError

    try:
        config_path = ns.config if ns.config is not None else ("params.yaml" if Path("params.yaml").is_file() else None)
        cfg = load_config(config_path, ns.profile, ns.overrides)
        lineage = json.loads(Path(ns.lineage).read_text()) if ns.lineage else None
        summary = train_grpo(
            cfg, ns.model, ns.data, ns.out, lineage=lineage, max_steps=ns.max_steps, resume=not ns.no_resume
        )
    except (ConfigError, GRPOError, RLDataError, RecordError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary:
        keys = ("model_dir", "global_steps", "train_seconds", "final_metrics")
        print(json.dumps({k: summary.get(k) for k in keys}, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
