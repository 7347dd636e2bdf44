"""``cfg.grpo`` mapped onto trl's ``GRPOConfig`` (and the LoRA and generation settings around it).

Split from :mod:`reasoning_ner.training.grpo` (which re-exports every name here), like trl's
scripts keep the trainer config apart from the run. Every keyword is checked against trl 1.16 by
the tests; the trl facts it relies on are listed in the docstring of :mod:`.grpo`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, GRPOSection
from ..rewards import build_reward_funcs

if TYPE_CHECKING:  # pragma: no cover
    from trl import GRPOConfig

__all__ = [
    "GRPOError",
    "apply_generation_settings",
    "build_grpo_config",
    "build_peft_config",
    "grpo_config_kwargs",
    "resolve_device",
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
    on_gpu = resolve_device(device) == "cuda"
    _check_rollout_setup(g, on_gpu)
    return {
        "output_dir": str(Path(output_dir) / "checkpoints"),
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        **_optimizer_kwargs(g, max_steps),
        **_grpo_loss_kwargs(g, reward_weights),
        **_precision_kwargs(g, on_gpu),
        **_rollout_kwargs(g, on_gpu),
        **_logging_kwargs(g),
    }


def _check_rollout_setup(g: GRPOSection, on_gpu: bool) -> None:
    """Refuse settings trl would only reject (or mishandle) after the model is loaded."""
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


def _optimizer_kwargs(g: GRPOSection, max_steps: int | None) -> dict[str, Any]:
    return {
        "learning_rate": g.learning_rate,
        "lr_scheduler_type": g.lr_scheduler_type,
        "warmup_steps": g.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        "weight_decay": g.weight_decay,
        "max_grad_norm": g.max_grad_norm,
        "num_train_epochs": g.num_train_epochs,
        "max_steps": g.max_steps if max_steps is None else max_steps,
        "per_device_train_batch_size": g.per_device_train_batch_size,
        "gradient_accumulation_steps": g.gradient_accumulation_steps,
    }


def _grpo_loss_kwargs(g: GRPOSection, reward_weights: Sequence[float]) -> dict[str, Any]:
    return {
        "loss_type": g.loss_type,
        "epsilon": g.epsilon,
        "epsilon_high": g.epsilon_high,
        "beta": g.beta,
        "num_generations": g.num_generations,
        "num_iterations": g.num_iterations,
        "temperature": g.temperature,
        "max_completion_length": g.max_completion_length,
        "scale_rewards": g.scale_rewards,
        "mask_truncated_completions": g.mask_truncated_completions,
        "reward_weights": [float(w) for w in reward_weights],
        "remove_unused_columns": False,  # the rewards read gold and schema
        "disable_dropout": True,  # policy and reference log-probs must agree on identical inputs
    }


def _precision_kwargs(g: GRPOSection, on_gpu: bool) -> dict[str, Any]:
    checkpointing = bool(g.gradient_checkpointing)
    return {
        "use_cpu": not on_gpu,
        "bf16": bool(g.bf16 and on_gpu),
        "activation_checkpointing": checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False} if checkpointing else None,
    }


def _rollout_kwargs(g: GRPOSection, on_gpu: bool) -> dict[str, Any]:
    """How completions are generated: vLLM (server or colocated) or transformers' ``generate``."""
    kwargs: dict[str, Any] = {
        "use_vllm": bool(g.use_vllm),
        "vllm_mode": g.vllm_mode,
        "vllm_max_model_length": g.max_prompt_length + g.max_completion_length,
    }
    if not g.use_vllm and on_gpu and g.generation_cache == "static":
        kwargs["cache_implementation"] = "static"
        # One cache size for every step (the RL sampler drops prompts over max_prompt_length), so a
        # compiled decode step (grpo.compile_generation) is traced once, not per prompt length.
        kwargs["generation_kwargs"] = {"max_cache_len": g.max_prompt_length + g.max_completion_length}
    if g.use_vllm:
        kwargs.update(_vllm_kwargs(g))
    return kwargs


def _vllm_kwargs(g: GRPOSection) -> dict[str, Any]:
    if g.vllm_mode == "server":
        if g.vllm_server_base_url:
            where: dict[str, Any] = {"vllm_server_base_url": g.vllm_server_base_url}
        else:
            where = {"vllm_server_host": g.vllm_server_host, "vllm_server_port": int(g.vllm_server_port)}
        return {**where, "vllm_server_timeout": float(g.vllm_server_timeout)}
    return {  # colocate
        "vllm_gpu_memory_utilization": float(g.vllm_gpu_memory_utilization),
        "vllm_tensor_parallel_size": int(g.vllm_tensor_parallel_size),
        "vllm_enable_sleep_mode": bool(g.vllm_enable_sleep_mode),
    }


def _logging_kwargs(g: GRPOSection) -> dict[str, Any]:
    return {
        "logging_steps": g.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": g.save_steps,
        "save_total_limit": g.save_total_limit,
        "save_only_model": False,
        "report_to": "none",  # JSON always; TensorBoard through an explicit callback when installed
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


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
