"""What a GRPO run logs and reports: ``metrics.jsonl`` (and TensorBoard when installed), the PNG
curves, the settings recorded in the model card and the card's GRPO section.

Split from :mod:`reasoning_ner.training.grpo` so the run itself reads as a short sequence of steps.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config

if TYPE_CHECKING:  # pragma: no cover
    from transformers import TrainerCallback

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


def json_safe(value: Any) -> Any:
    """NaN and infinities become None: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------- logging


def logging_callbacks(output_dir: Path) -> list[TrainerCallback]:
    """Every trainer log to ``metrics.jsonl``, and to ``tensorboard/`` when tensorboard is installed."""
    callbacks = [_metrics_callback(output_dir / "metrics.jsonl")]
    if _tensorboard_available():  # pragma: no cover - tensorboard is not installed in the CPU venv
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(output_dir / "tensorboard"))))
    return callbacks


def _tensorboard_available() -> bool:
    try:
        from transformers.integrations import is_tensorboard_available
    except ImportError:  # pragma: no cover
        return False
    return bool(is_tensorboard_available())


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
                row = {"step": state.global_step, "epoch": state.epoch, **{k: json_safe(v) for k, v in logs.items()}}
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")

    return JsonMetricsCallback()


def plot_grpo_curves(log_history: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """PNG curves (training/plots.py) of every PLOTS group with at least one logged key."""
    from .plots import plot_curves

    written = []
    for name, title, keys in PLOTS:
        present = [k for k in keys if any(row.get(k) is not None for row in log_history)]
        if present:
            written.append(str(plot_curves(log_history, present, out_dir / name, title)))
    return written


# ------------------------------------------------------------------------------- model card


def grpo_hyperparameters(cfg: Config, trl_args: Any, reward_names: list[str], weights: list[float]) -> dict[str, Any]:
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


def grpo_card_section(summary: dict[str, Any]) -> str:
    """The ``## GRPO`` section appended to the exported model's card: rewards, RL data, where to look."""
    data = summary["rl_data"]
    sampled = ", ".join(f"`{k}` {v}" for k, v in data["sampled"].items())
    sel = data.get("selection")
    chosen = (f", chosen from a pool of {sel['pool_size']} by the SFT policy's greedy F1, partly right answers first "
              f"(grpo.rl_selection=partly_right; per rank {sel['selected_per_rank']}); the pool was" if sel else ",")
    return f"""## GRPO

Reasoning enhancement with trl's `GRPOTrainer` (trl {summary['versions'].get('trl')}) from the SFT
checkpoint above: {summary['global_steps']} optimizer steps in {summary['train_seconds']:.0f} s on
{summary['device']}. Reward = {' + '.join(f'{w:g} x {n}' for n, w in summary['reward_terms'].items())}:
`f1_reward` is the per-sample micro-F1 of the parsed answer over (normalized span, label), 0 on a
parse failure and 0 for empty gold with an empty prediction (reference `safe_div`);
`schema_reward` is 1 iff the answer is valid JSON and every label is in the schema (it rewards
the correct empty answer); `format_reward` and `length_reward` are the optional format and
length-aware terms (`reasoning_ner.rewards`).

RL prompts: {data['sampled_total']} ({sampled}){chosen} proportional per dataset after capping each at
{data['per_dataset_cap']}, seed {data['seed']}; prompts over {data.get('max_prompt_length')} tokens dropped
({data.get('dropped_over_max_prompt_length')}). Final metrics are the last logging window of training
(rollouts at temperature {summary['trl_args']['temperature']}), not a held-out evaluation. Curves: `plots/`;
every logged value: `metrics.jsonl`; the sampling: `rl_data_stats.json`; everything: `summary.json` (next to `model/`).
"""


def package_versions() -> dict[str, str]:
    """Installed versions of the training stack, recorded in the summary."""
    import importlib.metadata as md

    out = {}
    for pkg in ("trl", "transformers", "torch", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:  # pragma: no cover
            pass
    return out
