"""How a training run uses its machine, shared by SFT and GRPO: which GPU options are really on
(everything off on CPU, a CUDA run without a required kernel package fails early), trl/transformers
arguments, dtype, LoRA, DeepSpeed launches, checkpoints to resume from, bf16 weights with an fp32 master
copy and regional compilation (measured in docs/training.md)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import SFTConfig

from ..config import Config, ConfigError, SFTSection
from ..prompt import IM_END


@dataclass
class RuntimeSettings:
    """What of the GPU settings in ``sft`` is actually used here (everything off on CPU)."""

    device: str
    bf16: bool
    gradient_checkpointing: bool
    padding_free: bool
    use_liger_kernel: bool
    attn_implementation: str | None
    notes: list[str] = field(default_factory=list)
    torch_compile: bool = False
    bf16_weights: bool = False


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda_bf16() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):  # a CPU-only torch build
        return False


#: The attention of CPU bf16 training: torch's SDPA in float32 whatever the autocast dtype.
FP32_SDPA = "sdpa_fp32"


def _sdpa_fp32(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
               **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """SDPA with autocast off and float32 inputs. On CPU, bf16 SDPA's backward is ~4x slower than the
    float32 one (measured, docs/training.md), and float32 scores keep the copy circuit's sharp matches."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)


def register_fp32_sdpa() -> str:
    """Register :data:`FP32_SDPA` with transformers' attention registry (idempotent); returns its name."""
    from transformers import AttentionInterface

    AttentionInterface.register(FP32_SDPA, _sdpa_fp32)
    return FP32_SDPA


def cpu_has_amx() -> bool:
    """True where the CPU has AMX tiles, on which oneDNN runs bf16 matrix multiplies natively."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def resolve_runtime(sft: SFTSection, device: str | None = None) -> RuntimeSettings:
    """Turn the configured GPU options into the ones that apply on this machine."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    notes: list[str] = []
    if device != "cuda":
        gpu_only = ("bf16", "gradient_checkpointing", "padding_free", "use_liger_kernel", "torch_compile", "bf16_weights")
        wanted = [k for k in gpu_only if getattr(sft, k)]
        if wanted or sft.attn_implementation:
            notes.append(f"no CUDA device: {', '.join(wanted + ['attn_implementation'] * bool(sft.attn_implementation))} off")
        cpu_bf16 = sft.cpu_bf16 is True or (sft.cpu_bf16 == "auto" and device == "cpu" and cpu_has_amx())
        if sft.cpu_bf16 == "auto":
            notes.append("cpu_bf16=auto: " + ("AMX present, bf16 autocast" if cpu_bf16 else "no AMX, float32"))
        attn = register_fp32_sdpa() if cpu_bf16 else None
        return RuntimeSettings(device, cpu_bf16, False, False, False, attn, notes)

    attn = sft.attn_implementation
    if attn and attn.startswith("flash_attention"):
        module = "flash_attn_interface" if attn.endswith("_3") else "flash_attn"
        if not _installed(module):
            notes.append(f"{attn} requested but {module} is not installed: using sdpa")
            attn = "sdpa"
    elif attn and "/" in attn and not _installed("kernels"):  # hub kernels, e.g. kernels-community/flash-attn2
        notes.append(f"{attn} requested but the kernels package is not installed: using sdpa")
        attn = "sdpa"
    padding_free = sft.padding_free and bool(attn) and (attn.startswith("flash_attention") or "flash" in attn)
    if sft.padding_free and not padding_free:
        notes.append("padding_free needs a flash-attention implementation: off")
    # A missing optimisation package fails here, before any model is loaded, instead of training slowly.
    if sft.use_liger_kernel and not _installed("liger_kernel"):
        raise ConfigError(
            "sft.use_liger_kernel is on but the liger-kernel package is not installed (pip install liger-kernel; the "
            "train-gpu image has it). Install it or set sft.use_liger_kernel=false."
        )
    if sft.use_liger_kernel and sft.torch_compile:
        raise ConfigError(
            "sft.use_liger_kernel and sft.torch_compile do not combine: Dynamo cannot trace Liger's RMSNorm inside a "
            "compiled decoder layer (measured on an H200 with torch 2.11 and liger-kernel 0.8.5, docs/training.md). "
            "Set one of them to false."
        )
    bf16 = sft.bf16 and _cuda_bf16()
    if sft.bf16 and not bf16:
        notes.append("bf16 not supported by this GPU: fp32")
    bf16_weights = sft.bf16_weights
    if bf16_weights and not (bf16 and sft.finetune == "full" and not deepspeed_launch()):
        # LoRA and DeepSpeed already load model.dtype (DeepSpeed keeps its own fp32 master copy).
        notes.append("bf16_weights applies to full fine-tuning in bf16 without DeepSpeed: off")
        bf16_weights = False
    return RuntimeSettings(device, bf16, sft.gradient_checkpointing, padding_free, sft.use_liger_kernel, attn, notes,
                           torch_compile=sft.torch_compile, bf16_weights=bf16_weights)


def build_sft_args(
    cfg: Config,
    checkpoint_dir: Path | str,
    runtime: RuntimeSettings,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> SFTConfig:
    """trl ``SFTConfig`` from the ``sft`` section. ``max_length`` stays None here: truncation is ours.

    ``extra``: further ``SFTConfig`` fields (e.g. ``{"adam_beta2": 0.95}``), applied last.
    """
    s = cfg.sft
    optional = {k: getattr(s, k) for k in ("adam_beta1", "adam_beta2", "max_grad_norm") if getattr(s, k) is not None}
    # Length-grouped batches (transformers' LengthGroupedSampler): on the tiny-cpu data, random
    # batches of 32 pad to 1.87x the real tokens, grouped ones to 1.02x. Auto (None): on whenever
    # padding-free batching is off. `sft.group_by_length` (when the config has it) overrides.
    group_by_length = s.group_by_length
    if group_by_length is None:
        group_by_length = not runtime.padding_free
    group_by_length = bool(group_by_length) and not runtime.padding_free
    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoint_dir),
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler_type,
        warmup_steps=s.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of the total steps
        weight_decay=s.weight_decay,
        num_train_epochs=s.num_train_epochs,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.per_device_train_batch_size,
        per_device_eval_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        max_length=None,
        completion_only_loss=True,
        eos_token=IM_END,
        bf16=runtime.bf16,
        fp16=False,
        # transformers 5 renamed gradient_checkpointing; setting the new name avoids the deprecation path.
        activation_checkpointing=runtime.gradient_checkpointing,
        padding_free=runtime.padding_free,
        use_liger_kernel=runtime.use_liger_kernel,
        use_cpu=runtime.device == "cpu",
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        logging_steps=s.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss must reach the log and the NonFiniteLossCallback
        save_strategy="steps" if s.save_steps > 0 else "no",
        save_steps=max(s.save_steps, 1),
        save_total_limit=s.save_total_limit,
        eval_strategy="no",
        prediction_loss_only=True,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    kwargs.update(optional)
    kwargs.update(extra or {})
    if kwargs.get("max_length") is not None:
        raise ValueError("max_length is sft.max_length (left truncation by the trainer), not an SFTConfig field here")
    return SFTConfig(**kwargs)


def load_for_training(name_or_path: str, cfg: Config, runtime: RuntimeSettings) -> tuple[Any, Any]:
    """The base model and tokenizer, in the dtype training wants.

    Full fine-tuning without DeepSpeed loads float32 master weights (bf16 then runs as autocast);
    LoRA and DeepSpeed (which keeps its own fp32 master copy) load ``model.dtype``.
    """
    from ..modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(name_or_path, training_dtype(cfg, runtime), cfg.model.trust_remote_code)
    if runtime.attn_implementation:
        model.set_attn_implementation(runtime.attn_implementation)
    return model, tokenizer


def training_dtype(cfg: Config, runtime: RuntimeSettings) -> str:
    """float32 master weights for full fine-tuning (bf16 as autocast), unless ``sft.bf16_weights``
    (bf16 weights, the fp32 master copy lives in :class:`FP32MasterAdamW`); else ``model.dtype``."""
    if runtime.device == "cpu":
        return "float32"
    if runtime.bf16_weights:
        return "bfloat16"
    if cfg.sft.finetune == "full" and not deepspeed_launch():
        return "float32"
    return cfg.model.dtype



def deepspeed_launch() -> bool:
    """Launched by ``accelerate launch`` with a DeepSpeed config (ZeRO-3: sharded weights)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")


def lora_config(cfg: Config) -> Any:
    from peft import LoraConfig

    s = cfg.sft
    return LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        target_modules=list(s.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def last_checkpoint(checkpoint_dir: Path | str) -> str | None:
    """The newest ``checkpoint-N`` folder to resume from, or None."""
    from transformers.trainer_utils import get_last_checkpoint

    path = Path(checkpoint_dir)
    return get_last_checkpoint(str(path)) if path.is_dir() else None


# ============================================================================================
# GPU speed options: bf16 weights with an fp32 master copy, regional compilation
# ============================================================================================


class FP32MasterAdamW(torch.optim.AdamW):
    """AdamW over fp32 master copies of (bf16) model parameters (``sft.bf16_weights``).

    The model computes and keeps gradients in bf16; each step copies the gradients into the fp32
    masters, steps AdamW there and writes the masters back rounded to bf16. Updates smaller than a
    bf16 ulp therefore accumulate in the master instead of vanishing (pure bf16 AdamW at lr 2e-5
    learned visibly slower: shared/reference/gpu-scale.md). The masters are saved in the
    optimizer state, so a resumed run continues from the same fp32 values.
    """

    def __init__(self, params: Any, **kwargs: Any) -> None:
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        master_groups = []
        for g in groups:
            model_params = list(g["params"])
            masters = [q.detach().clone().float().requires_grad_(True) for q in model_params]
            self._pairs += list(zip(model_params, masters))
            master_groups.append({**g, "params": masters})
        super().__init__(master_groups, **kwargs)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for param, master in self._pairs:
            if param.grad is None:
                master.grad = None
            elif master.grad is None:
                master.grad = param.grad.float()
            else:
                master.grad.copy_(param.grad)
        loss = super().step(closure)
        with_grad = [(p, m) for p, m in self._pairs if m.grad is not None]
        if with_grad:
            torch._foreach_copy_([p for p, _ in with_grad], [m for _, m in with_grad])
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param, _ in self._pairs:
            param.grad = None
        super().zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fp32_master": [m.detach() for _, m in self._pairs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        masters = state_dict.pop("fp32_master", None)
        super().load_state_dict(state_dict)
        if masters is not None:
            with torch.no_grad():
                for (param, master), saved in zip(self._pairs, masters):
                    master.copy_(saved)
                    param.copy_(saved)


def compile_decoder_layers(model: Any) -> int:
    """``torch.compile`` each decoder layer in place (regional compilation); returns how many.

    The layers share one compiled graph, so compile time is that of one layer rather than the
    whole model; dynamic shapes because batches have different lengths. Compilation happens at
    the first step, after Liger (applied when training starts) has swapped its kernels in.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


# ============================================================================================
# Trainer and callback
# ============================================================================================
