"""Stage 2: CoT tuning (SFT) with trl's ``SFTTrainer``, one code path for every profile.

Data. Canonical CoT records (stage 1 output: ``text``, ``entities``, ``schema``, ``cot``) become a
trl *prompt/completion* dataset of plain strings:

* prompt     = ``chatml(render_prompt(text, schema, prompt.style))``: the ChatML user turn plus
  ``<|im_start|>assistant\\n``, byte-identical to what evaluation and serving send;
* completion = ``render_target(record, prompt)`` + ``<|im_end|>``, i.e.
  ``<think>\\n{cot}\\n</think>\\n{answer}<|im_end|>``.

What trl 1.16 does with it (read from ``trl/trainer/sft_trainer.py``): for plain (non-chat)
prompt/completion data it appends the eos token to the completion when missing (we set
``SFTConfig.eos_token = "<|im_end|>"`` so that is our end-of-turn token, also on Qwen base
tokenizers whose eos is ``<|endoftext|>``), tokenizes prompt and prompt+completion with
``tokenizer(text)``, marks the completion from the first token where the two differ, and, since
``completion_only_loss`` defaults to True for prompt/completion data, builds ``labels`` with -100 on
every prompt token at dataset-preparation time. So the loss covers the completion and the closing
``<|im_end|>``, nothing else. Conversational prompt/completion data is *not* used: it renders
through the tokenizer's chat template, and Qwen3's template rewrites ``<think>`` blocks and adds a
trailing newline to the loss, so training text would drift from the prompt format of
:mod:`reasoning_ner.prompt`. trl truncates with ``truncation_mode="keep_start"`` by default, which
cuts the answer off long examples (``keep_end`` is deprecated in 1.16), and drops fully masked
examples only inside that truncation step. We therefore pass ``max_length=None`` to trl and
truncate ourselves in :meth:`CompletionOnlySFTTrainer._prepare_dataset`: keep the **last**
``max_length`` tokens (the reference's left truncation, so the answer and ``<|im_end|>`` always
survive), then drop examples with no completion token left at a predicted position.

Speed. trl 1.16's own loss patches the model with a fused LM head; on a device without Triton
(any CPU) it scores *every* position in tiles and also computes entropy and top-1 accuracy for
logging, which makes it ~4.5x slower than a target-only loop on the tiny-cpu profile
(tiny-cpu-learning.md). :class:`CompletionOnlySFTTrainer` overrides ``compute_loss``: the
backbone yields hidden states, only positions whose (shifted) label is not -100 are gathered,
and the LM head and cross-entropy run on those rows only (on CUDA with Triton through trl's
chunked log-prob kernel, which never materializes the 151k-wide logits). No entropy or token
accuracy is computed. The head is installed as a forward patch, like trl's own, so the call goes
through DDP / DeepSpeed / PEFT wrappers unchanged. Loss normalisation follows transformers:
``num_items_in_batch`` (the completion-token count of the whole accumulated batch, over all
processes) divides the summed NLL, so gradient accumulation gives the same gradient as one big
batch (tested).

Everything else is stock: AdamW, schedulers, checkpoints (``save_steps``, ``save_total_limit``),
resume from the last checkpoint in ``<out>/checkpoints``, LoRA via ``peft_config``, bf16 /
gradient checkpointing / padding-free / flash attention on CUDA when installed, Liger's layer
kernels (a CUDA run without liger-kernel fails early), regional ``torch.compile``, bf16 weights
with an fp32 master copy (all off on CPU automatically; measured in docs/training.md),
``accelerate launch`` with DeepSpeed ZeRO-3 for multi-GPU full fine-tuning.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import json
import logging
import math
import random
import sys
import time
import types
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import TrainerCallback
from transformers.modeling_outputs import ModelOutput
from trl import SFTConfig, SFTTrainer

from ..config import Config, ConfigError, SFTSection, config_fingerprint, load_config
from ..lineage import file_md5
from ..prompt import IM_END, chatml, render_prompt, render_target
from ..records import NERRecord, RecordError, read_jsonl, write_json

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
#: Above this many logits (tokens x vocabulary) per micro-batch the plain LM head runs in
#: checkpointed chunks, so e.g. 16 x 8192 completion tokens x 151k vocabulary never materialize.
_MAX_LOGITS_PER_BLOCK = 1 << 26


class TrainingDataError(ValueError):
    """Training data that must not or cannot be trained on; the message names file and record."""


class ZeroShotDataError(TrainingDataError):
    """A record of a zero-shot evaluation dataset (``data.zero_shot_datasets``) was offered for training."""


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


# ============================================================================================
# Data
# ============================================================================================


def load_sft_records(files: Sequence[Path | str], cfg: Config) -> list[NERRecord]:
    """Read, validate and vet canonical CoT records for SFT.

    Raises :class:`ZeroShotDataError` for any record (or file under a folder) of a zero-shot
    evaluation dataset, :class:`TrainingDataError` for test-split records, records without a
    ``cot`` when ``prompt.with_cot`` is on, and missing or empty files. Applies
    ``sft.max_train_records`` as a seeded random sample (``cfg.seed``).
    """
    if not files:
        raise TrainingDataError("no training files given")
    zero_shot = set(cfg.data.zero_shot_datasets)
    records: list[NERRecord] = []
    for path in map(Path, files):
        if not path.is_file():
            raise TrainingDataError(f"training file {path} does not exist")
        if path.parent.name in zero_shot:
            raise ZeroShotDataError(
                f"{path}: folder {path.parent.name!r} is a zero-shot evaluation dataset "
                f"(data.zero_shot_datasets); it is never used for training"
            )
        n_before = len(records)
        try:
            for i, obj in enumerate(read_jsonl(path), 1):
                rec = NERRecord.from_dict(obj)
                rec.validate()
                where = f"{path} record {i} ({rec.id})"
                if rec.dataset in zero_shot:
                    raise ZeroShotDataError(
                        f"{where} belongs to the zero-shot evaluation dataset {rec.dataset!r}; the datasets in "
                        f"data.zero_shot_datasets ({', '.join(sorted(zero_shot))}) are never used for training"
                    )
                if rec.split == "test":
                    raise TrainingDataError(f"{where} is from a test split; evaluation splits are never trained on")
                if cfg.prompt.with_cot and not (rec.cot or "").strip():
                    raise TrainingDataError(
                        f"{where} has no 'cot': SFT trains on CoT records (stage 1 output). Synthesize chains first, "
                        "or set prompt.with_cot=false for the paper's w/o-CoT ablation"
                    )
                records.append(rec)
        except RecordError as exc:
            raise TrainingDataError(f"{path}: {exc}") from exc
        if len(records) == n_before:
            raise TrainingDataError(f"training file {path} holds no records")
    limit = cfg.sft.max_train_records
    if limit is not None and len(records) > limit:
        keep = sorted(random.Random(cfg.seed).sample(range(len(records)), limit))
        records = [records[i] for i in keep]
    return records


def as_records(items: Iterable[NERRecord | dict[str, Any]] | Path | str | None) -> list[NERRecord]:
    """Records from a JSONL path, a list of records or dicts, or None (empty list)."""
    if items is None:
        return []
    if isinstance(items, (str, Path)):
        return [NERRecord.from_dict(o) for o in read_jsonl(items)]
    return [r if isinstance(r, NERRecord) else NERRecord.from_dict(r) for r in items]


def sft_example(record: NERRecord, cfg: Config) -> dict[str, str]:
    """One trl prompt/completion example (plain strings, see the module docstring)."""
    prompt = chatml(render_prompt(record.text, record.schema, cfg.prompt.style))
    return {"prompt": prompt, "completion": render_target(record, cfg.prompt) + IM_END}


def keep_last_tokens(input_ids: list[int], labels: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """Left truncation: the last ``max_length`` tokens (the answer and ``<|im_end|>`` survive)."""
    if max_length is None or len(input_ids) <= max_length:
        return input_ids, labels
    return input_ids[-max_length:], labels[-max_length:]


def has_trainable_labels(labels: Sequence[int]) -> bool:
    """True if some token after the first is a target (position 0 is never predicted)."""
    return any(label != IGNORE_INDEX for label in labels[1:])


# ============================================================================================
# Device-dependent settings
# ============================================================================================


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
        return RuntimeSettings(device, False, False, False, False, None, notes)

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
    if bf16_weights and not (bf16 and sft.finetune == "full" and not _deepspeed_launch()):
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
    if cfg.sft.finetune == "full" and not _deepspeed_launch():
        return "float32"
    return cfg.model.dtype


def _deepspeed_launch() -> bool:
    import os

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


# ============================================================================================
# The completion-only LM head
# ============================================================================================


@dataclass
class CompletionLMOutput(ModelOutput):
    """Loss pieces of the completion-only head: summed NLL and the number of target tokens."""

    loss: torch.Tensor | None = None
    nll_sum: torch.Tensor | None = None
    n_tokens: torch.Tensor | None = None


def _use_fused_kernel(device: torch.device) -> bool:
    try:
        from trl.kernels.chunked_logprob import _use_triton
    except ImportError:  # pragma: no cover - trl layout changed
        return False
    return bool(_use_triton(device))


def completion_nll(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    lm_head: torch.nn.Module,
    logit_scale: float = 1.0,
    softcap: float | None = None,
) -> CompletionLMOutput:
    """Summed next-token NLL at the positions whose shifted label is not -100.

    Only those rows of ``hidden`` go through the LM head. On CUDA with Triton, trl's chunked
    log-prob kernel computes it without materializing logits; elsewhere the head runs on the
    gathered rows (in checkpointed blocks when tokens x vocabulary would be large).
    """
    shift_labels = labels[:, 1:].to(hidden.device)
    mask = shift_labels != IGNORE_INDEX
    rows = hidden[:, :-1][mask]
    targets = shift_labels[mask]
    n_tokens = mask.sum()
    weight = lm_head.weight
    if _use_fused_kernel(rows.device):
        from trl.kernels import ChunkedLogProbFunction
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, maybe_gather_lm_head_ctx

        with maybe_gather_lm_head_ctx(weight, lm_head.bias):
            log_probs = ChunkedLogProbFunction.apply(
                rows, weight, lm_head.bias, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, softcap, logit_scale, ("log_probs",)
            )[0]
        nll_sum = -log_probs.sum()
    else:
        vocab = getattr(lm_head, "out_features", None) or weight.shape[0]

        def block(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            logits = lm_head(h).float()
            if logit_scale != 1.0:
                logits = logits * logit_scale
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
            return F.cross_entropy(logits, t, reduction="sum")

        per_block = max(1, _MAX_LOGITS_PER_BLOCK // max(vocab, 1))
        if rows.shape[0] <= per_block:
            nll_sum = block(rows, targets)
        else:
            from torch.utils.checkpoint import checkpoint

            nll_sum = sum(
                checkpoint(block, h, t, use_reentrant=False)
                for h, t in zip(rows.split(per_block), targets.split(per_block))
            )
    return CompletionLMOutput(loss=nll_sum / n_tokens.clamp(min=1), nll_sum=nll_sum, n_tokens=n_tokens)


def add_completion_head(model: Any) -> None:
    """Patch ``model.forward``: with ``completion_labels=...`` it returns a :class:`CompletionLMOutput`.

    Without that keyword the previous forward runs unchanged (generation is unaffected). Patch the
    transformers model itself (under PEFT: ``peft_model.get_base_model()``), so calls through
    PEFT, DDP and DeepSpeed wrappers reach it.
    """
    if getattr(model, "_rner_completion_head", False):
        return
    previous_forward = model.forward
    text_config = model.config.get_text_config()
    softcap = getattr(text_config, "final_logit_softcapping", None)
    logit_scale = getattr(text_config, "logit_scale", None)
    logit_scale = 1.0 if logit_scale is None else float(logit_scale)

    @functools.wraps(type(model).forward)
    def _forward(self: Any, *args: Any, completion_labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if completion_labels is None:
            return previous_forward(*args, **kwargs)
        for key in ("labels", "num_items_in_batch", "shift_labels", "fused_lm_head"):
            kwargs.pop(key, None)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        return completion_nll(hidden, completion_labels, self.get_output_embeddings(), logit_scale, softcap)

    model.forward = types.MethodType(_forward, model)
    model._rner_completion_head = True


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


class LengthBucketSampler(torch.utils.data.Sampler):
    """Batches of similar length, in random batch order.

    Indices are shuffled, cut into chunks of ``50 * batch_size``, each chunk is sorted by length
    and split into batches; then the *batches* are shuffled (a partial batch goes last, so the
    data loader's batching stays aligned). Padding is almost that of sorted data, while
    consecutive batches have unrelated lengths: transformers' ``LengthGroupedSampler`` walks each
    chunk from longest to shortest, which makes the logged loss a sawtooth. ``set_epoch`` (called
    by accelerate) gives each epoch its own, reproducible order, also after a resume.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, chunk_batches: int = 50) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.chunk = chunk_batches * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        full: list[list[int]] = []
        partial: list[list[int]] = []
        for start in range(0, len(perm), self.chunk):
            chunk = sorted(perm[start : start + self.chunk], key=lambda i: -self.lengths[i])
            for k in range(0, len(chunk), self.batch_size):
                batch = chunk[k : k + self.batch_size]
                (full if len(batch) == self.batch_size else partial).append(batch)
        order = torch.randperm(len(full), generator=g).tolist()
        return [full[i] for i in order] + partial

    def __iter__(self) -> Any:
        return iter([i for batch in self.batches() for i in batch])


class CompletionOnlySFTTrainer(SFTTrainer):
    """trl ``SFTTrainer`` with left truncation and a loss computed at completion positions only.

    ``max_length`` (keyword) is the truncation length; ``args.max_length`` must be None.
    """

    # compute_loss normalises by the accumulated batch's token count itself (or divides by the
    # accumulation steps when no count is available); Trainer must not divide again.
    loss_is_scaled_for_ga = True

    def __init__(
        self, *args: Any, max_length: int | None = None, torch_compile: bool = False, bf16_weights: bool = False, **kwargs: Any
    ) -> None:
        sft_args = kwargs.get("args") if "args" in kwargs else (args[1] if len(args) > 1 else None)
        if sft_args is not None and getattr(sft_args, "max_length", None) is not None:
            raise ValueError("pass max_length to CompletionOnlySFTTrainer (left truncation), not to SFTConfig")
        if sft_args is not None and getattr(sft_args, "packing", False):
            raise ValueError("packing is not supported: it would truncate from the right and cut answers")
        self.truncation_length = max_length
        self.example_counts: dict[str, dict[str, int]] = {}
        self._nonfinite_local: torch.Tensor | None = None
        super().__init__(*args, **kwargs)
        from accelerate.utils import is_peft_model

        add_completion_head(self.model.get_base_model() if is_peft_model(self.model) else self.model)
        self.bf16_weights = bf16_weights
        self.compiled_layers = compile_decoder_layers(self.model) if torch_compile else 0
        # Count completion tokens over the whole accumulated batch, so that the loss of k
        # micro-batches equals the loss of one k-times larger batch.
        self.model_accepts_loss_kwargs = True

    def create_optimizer(self, model: Any = None) -> Any:
        if self.bf16_weights and self.optimizer is None:
            # Build the stock optimizer (param groups, lr, betas, fused...) and move it onto fp32 masters.
            stock = super().create_optimizer(model)
            if type(stock) is not torch.optim.AdamW:
                raise ConfigError(f"sft.bf16_weights needs the AdamW optimizer, not {type(stock).__name__}")
            import inspect

            accepted = inspect.signature(torch.optim.AdamW).parameters
            self.optimizer = FP32MasterAdamW(stock.param_groups, **{k: v for k, v in stock.defaults.items() if k in accepted})
            return self.optimizer
        return super().create_optimizer(model)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = [len(ids) for ids in dataset["input_ids"]]
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return LengthBucketSampler(lengths, self.args.per_device_train_batch_size, seed=seed)

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, packing: bool, formatting_func: Any, dataset_name: str) -> Any:
        dataset = super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        before = len(dataset)
        if self.truncation_length is not None:
            n = self.truncation_length

            def truncate(example: dict[str, Any]) -> dict[str, Any]:
                ids, labels = keep_last_tokens(example["input_ids"], example["labels"], n)
                return {"input_ids": ids, "labels": labels, "truncated": len(ids) < len(example["input_ids"])}

            dataset = dataset.map(truncate, desc=f"Keeping the last {n} tokens of {dataset_name} examples")
            truncated = sum(dataset["truncated"])
            dataset = dataset.remove_columns("truncated")
        else:
            truncated = 0
        dataset = dataset.filter(
            lambda ex: has_trainable_labels(ex["labels"]), desc=f"Dropping fully masked {dataset_name} examples"
        )
        self.example_counts[dataset_name] = {"examples": len(dataset), "truncated": truncated, "dropped": before - len(dataset)}
        if len(dataset) == 0:
            raise TrainingDataError(
                f"no {dataset_name} example keeps a completion token after truncation to max_length={self.truncation_length}"
            )
        return dataset

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        mode = "train" if self.model.training else "eval"
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        inputs["use_cache"] = False
        outputs = model(**inputs, completion_labels=labels)
        if num_items_in_batch is not None:
            loss = outputs.nll_sum / num_items_in_batch
            if self.args.average_tokens_across_devices:
                # Like Trainer.compute_loss: the count covers every rank and DDP averages gradients.
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        else:
            loss = outputs.nll_sum / outputs.n_tokens.clamp(min=1)
            if mode == "train":
                loss = loss / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        if mode == "train":
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["input_ids"].size(1), device=inputs["input_ids"].device)
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(local).sum().item()) // self._tp_size
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: Any = None) -> Any:
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        bad = ~torch.isfinite(loss.detach()).all()
        self._nonfinite_local = bad if self._nonfinite_local is None else (self._nonfinite_local | bad)
        return loss

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        # A finite loss can still give NaN/inf gradients (overflow in backward); the optimizer
        # would write them into the weights, so this counts as divergence at this step too.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None:
            bad = ~torch.isfinite(torch.as_tensor(grad_norm, dtype=torch.float32)).all()
            bad = bad.to(self._nonfinite_local.device) if self._nonfinite_local is not None else bad
            self._nonfinite_local = bad if self._nonfinite_local is None else (self._nonfinite_local | bad)
        return grad_norm

    def nonfinite_since_last_check(self) -> bool:
        """Whether any micro-batch on any process had a non-finite loss since the last call (collective)."""
        flag = self._nonfinite_local
        self._nonfinite_local = None
        value = torch.tensor(0.0 if flag is None else float(flag), device=self.args.device)
        if self.accelerator.num_processes > 1:
            value = self.accelerator.reduce(value, reduction="max")
        return bool(value.item() > 0)


class NonFiniteLossCallback(TrainerCallback):
    """Stops training at the first NaN/inf loss or gradient norm, keeps broken weights out of checkpoints.

    Bound to a :class:`CompletionOnlySFTTrainer` it checks every optimizer step (loss of every
    micro-batch and the gradient norm; one collective scalar); unbound (any trainer) it checks the
    logged ``loss`` and ``grad_norm``. ``event`` records what happened;
    :func:`train_sft` turns it into a :class:`NonFiniteLossError`.
    """

    def __init__(self) -> None:
        self.trainer: Any = None
        self.event: dict[str, Any] | None = None

    def bind(self, trainer: Any) -> NonFiniteLossCallback:
        self.trainer = trainer
        return self

    def _trip(self, state: Any, control: Any, value: Any) -> None:
        if self.event is None:
            self.event = {"step": state.global_step, "loss": value}
            logger.error("non-finite loss or gradient norm at step %s (%s): stopping", state.global_step, value)
        control.should_training_stop = True
        control.should_save = False
        control.should_evaluate = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.event is None and self.trainer is not None and hasattr(self.trainer, "nonfinite_since_last_check"):
            if self.trainer.nonfinite_since_last_check():
                self._trip(state, control, "nan/inf")
                control.should_log = True  # put the bad loss into log_history for the post-mortem
        if self.event is not None:
            control.should_save = False
            control.should_training_stop = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self._trip(state, control, f"{key}={value}")
                if self.event is not None and self.event["loss"] == "nan/inf":
                    self.event["loss"] = f"{key}={value}"
        return control

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.event is not None:
            control.should_save = False
        return control


# ============================================================================================
# Orchestration
# ============================================================================================


def build_trainer(
    cfg: Config,
    records: Sequence[NERRecord],
    model: Any,
    tokenizer: Any,
    checkpoint_dir: Path | str,
    *,
    runtime: RuntimeSettings | None = None,
    args: SFTConfig | None = None,
    eval_records: Sequence[NERRecord] = (),
    trainer_cls: type | None = None,
    callbacks: list[Any] | None = None,
    progress: bool = True,
) -> Any:
    """The trainer for ``records`` (already vetted by :func:`load_sft_records`).

    ``trainer_cls`` defaults to :class:`CompletionOnlySFTTrainer`; the benchmark passes trl's
    stock ``SFTTrainer`` to measure the speed-up (stock gets no truncation: ``max_length=None``).
    """
    from datasets import Dataset

    runtime = runtime or resolve_runtime(cfg.sft)
    args = args or build_sft_args(cfg, checkpoint_dir, runtime, progress)
    trainer_cls = trainer_cls or CompletionOnlySFTTrainer
    train_ds = Dataset.from_list([sft_example(r, cfg) for r in records])
    eval_ds = Dataset.from_list([sft_example(r, cfg) for r in eval_records]) if eval_records else None
    kwargs: dict[str, Any] = {}
    if issubclass(trainer_cls, CompletionOnlySFTTrainer):
        kwargs.update(max_length=cfg.sft.max_length, torch_compile=runtime.torch_compile, bf16_weights=runtime.bf16_weights)
    return trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora_config(cfg) if cfg.sft.finetune == "lora" else None,
        callbacks=callbacks,
        **kwargs,
    )


def last_checkpoint(checkpoint_dir: Path | str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    path = Path(checkpoint_dir)
    return get_last_checkpoint(str(path)) if path.is_dir() else None


def default_lineage(train_files: Sequence[Path], records: Sequence[NERRecord]) -> dict[str, Any]:
    teachers = Counter(str(r.meta.get("teacher", "unknown")) for r in records)
    return {
        "train_files": [{"path": str(p), "md5": file_md5(Path(p)), "bytes": Path(p).stat().st_size} for p in train_files],
        "records_per_dataset": dict(sorted(Counter(r.dataset for r in records).items())),
        "cot_teachers": dict(teachers),
    }


def _loss_points(history: list[dict[str, Any]]) -> list[float]:
    return [float(e["loss"]) for e in history if "loss" in e and isinstance(e["loss"], (int, float))]


def _is_main(trainer: Any) -> bool:
    return bool(trainer.is_world_process_zero())


def train_sft(
    cfg: Config,
    train_files: list[Path],
    output_dir: Path,
    base_model: str | None = None,
    lineage: dict[str, Any] | None = None,
    eval_records: Sequence[NERRecord | dict[str, Any]] | Path | str | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    callbacks: list[Any] | None = None,
    trainer_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage 2 end to end: vet data, train with trl, export the merged model.

    Writes under ``output_dir``: ``checkpoints/`` (trainer checkpoints; a later call resumes from
    the last one when ``resume``), ``model/`` (the exported Hugging Face model),
    ``log_history.json``, ``loss.png`` and ``summary.json``. ``eval_records`` (records, dicts or a
    JSONL path) add an eval loss (when they carry ``cot``) and a greedy-generation parse rate and
    paper-parity F1 (single process only) to the summary and the model card. ``trainer_args``:
    extra trl ``SFTConfig`` fields for settings the config does not carry.

    Returns the summary: steps, train loss first/last, seconds, paths, example counts.
    Raises :class:`TrainingDataError` / :class:`ZeroShotDataError` before loading any model, and
    :class:`NonFiniteLossError` (after writing the log and plot) when the loss diverges.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    train_files = [Path(p) for p in train_files]
    records = load_sft_records(train_files, cfg)
    evals = as_records(eval_records)

    runtime = resolve_runtime(cfg.sft)
    for note in runtime.notes:
        logger.info("sft runtime: %s", note)
    checkpoint_dir = output_dir / "checkpoints"
    # SFTConfig before the model: under `accelerate launch` with ZeRO-3 it sets up zero.Init for loading.
    args = build_sft_args(cfg, checkpoint_dir, runtime, progress, trainer_args)
    from ..modeling import resolve_base_model

    name = base_model or resolve_base_model(cfg.model)
    model, tokenizer = load_for_training(name, cfg, runtime)

    guard = NonFiniteLossCallback()
    eval_with_cot = [r for r in evals if r.cot] if cfg.prompt.with_cot else evals
    trainer = build_trainer(
        cfg, records, model, tokenizer, checkpoint_dir, runtime=runtime, args=args,
        eval_records=eval_with_cot, callbacks=[guard, *(callbacks or [])], progress=progress,
    )
    guard.bind(trainer)
    zero3 = bool(getattr(trainer, "is_deepspeed_enabled", False)) and getattr(
        getattr(trainer.accelerator.state, "deepspeed_plugin", None), "zero_stage", 0
    ) == 3
    if zero3 and cfg.sft.finetune == "lora":
        raise ConfigError("sft.finetune=lora with DeepSpeed ZeRO-3 is not supported (merging needs full weights); use one GPU or DDP")

    resume_from = last_checkpoint(checkpoint_dir) if resume else None
    if resume_from:
        logger.info("resuming from %s", resume_from)
    train_output = trainer.train(resume_from_checkpoint=resume_from)
    history = list(trainer.state.log_history)
    losses = _loss_points(history)
    main = _is_main(trainer)
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "log_history.json", history)
        from .plots import plot_curves

        keys = ["loss"] + (["eval_loss"] if any("eval_loss" in e for e in history) else [])
        plot_curves(history, keys, output_dir / "loss.png", f"SFT loss ({cfg.profile}, {cfg.sft.finetune})")
    if guard.event is not None:
        raise NonFiniteLossError(
            f"training diverged: non-finite loss or gradient norm ({guard.event['loss']}) at step {guard.event['step']}; "
            f"training stopped and no model was exported. The model diverged: lower sft.learning_rate (now {cfg.sft.learning_rate:g}) "
            f"or check the data. Last checkpoint (written before the divergence): "
            f"{last_checkpoint(checkpoint_dir) or 'none'}. Log: {output_dir / 'log_history.json'}"
        )

    metrics: dict[str, Any] = {
        "global_step": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": float(train_output.training_loss),
    }
    if eval_with_cot:
        metrics["eval_loss"] = float(trainer.evaluate()["eval_loss"])

    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if zero3 else None
    model_dir = output_dir / "model"
    summary: dict[str, Any] = {}
    if main:
        from .export import export_model, merge_lora
        from .generate import generate_and_score

        final = merge_lora(trainer.model)
        if evals and trainer.accelerator.num_processes == 1:
            max_new = cfg.sft.eval_max_new_tokens or min(2 * cfg.sft.max_length, 2048)
            scores, _ = generate_and_score(
                final, tokenizer, evals, cfg.prompt, max_new_tokens=max_new, batch_size=cfg.sft.per_device_train_batch_size
            )
            metrics.update({"eval_n": scores["n"], "eval_parse_rate": scores["parse_rate"], "eval_f1": scores["f1"]})
        counts = trainer.example_counts.get("train", {"examples": len(records), "truncated": 0, "dropped": 0})
        world = trainer.accelerator.num_processes
        hyper = {
            "profile": cfg.profile,
            "finetune": cfg.sft.finetune,
            **({"lora_r": cfg.sft.lora_r, "lora_alpha": cfg.sft.lora_alpha, "lora_dropout": cfg.sft.lora_dropout}
               if cfg.sft.finetune == "lora" else {}),
            "learning_rate": cfg.sft.learning_rate,
            "lr_scheduler_type": cfg.sft.lr_scheduler_type,
            "warmup_ratio": cfg.sft.warmup_ratio,
            "weight_decay": cfg.sft.weight_decay,
            "num_train_epochs": cfg.sft.num_train_epochs,
            "max_steps": cfg.sft.max_steps,
            "per_device_train_batch_size": cfg.sft.per_device_train_batch_size,
            "gradient_accumulation_steps": cfg.sft.gradient_accumulation_steps,
            "processes": world,
            "effective_batch_size": cfg.sft.per_device_train_batch_size * cfg.sft.gradient_accumulation_steps * world,
            "max_length": f"{cfg.sft.max_length} (left-truncated: last tokens kept)",
            "loss": "NLL on completion tokens + <|im_end|>, normalised by the accumulated token count",
            "prompt_style": cfg.prompt.style,
            "with_cot": cfg.prompt.with_cot,
            "answer_indent": cfg.prompt.answer_indent,
            "bf16": runtime.bf16,
            "gradient_checkpointing": runtime.gradient_checkpointing,
            "padding_free": runtime.padding_free,
            "liger_kernel": runtime.use_liger_kernel,
            "torch_compile": runtime.torch_compile,
            "bf16_weights (fp32 master in the optimizer)": runtime.bf16_weights,
            "attn_implementation": runtime.attn_implementation or "model default",
            "seed": cfg.seed,
            "train_examples": counts["examples"],
            "truncated_examples": counts["truncated"],
            "dropped_examples": counts["dropped"],
            "config_sha256": hashlib.sha256(config_fingerprint(cfg).encode()).hexdigest()[:16],
            **{f"trl.{k}": v for k, v in (trainer_args or {}).items()},
        }
        full_lineage = {**default_lineage(train_files, records), **(lineage or {})}
        export_model(
            final, tokenizer, model_dir, base_model=name, stage="SFT",
            datasets=sorted({r.dataset for r in records if r.dataset}), lineage=full_lineage,
            hyperparameters=hyper, metrics=metrics, state_dict=state_dict,
            max_new_tokens=cfg.sft.eval_max_new_tokens,
        )
        summary = {
            "steps": trainer.state.global_step,
            "train_loss_first": metrics["train_loss_first"],
            "train_loss_last": metrics["train_loss_last"],
            "seconds": round(time.perf_counter() - started, 2),
            "train_seconds": round(float(train_output.metrics.get("train_runtime", 0.0)), 2),
            "steps_per_second": train_output.metrics.get("train_steps_per_second"),
            "output_dir": str(output_dir),
            "model_dir": str(model_dir),
            "resumed_from": resume_from,
            "examples": counts,
            "metrics": metrics,
            "runtime_notes": runtime.notes,
            "base_model": name,
        }
        write_json(output_dir / "summary.json", summary)
    trainer.accelerator.wait_for_everyone()
    return summary


# ============================================================================================
# Thin entry point (for `accelerate launch -m reasoning_ner.training.sft ...`)
# ============================================================================================


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reasoning_ner.training.sft", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: ./params.yaml when present)")
    parser.add_argument("--profile", default=None, help="tiny-cpu, qwen3-1.7b, qwen3-8b")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value override")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="canonical CoT JSONL file(s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--base-model", default=None, help="hub name or path (default: config model.base_model)")
    parser.add_argument("--eval", dest="eval_file", type=Path, default=None, help="JSONL records for the final check")
    parser.add_argument("--eval-n", type=int, default=200, help="seeded sample size of --eval records")
    parser.add_argument("--lineage", type=Path, default=None, help="JSON file with lineage for the model card")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    parser.add_argument("--no-progress", action="store_true")
    ns = parser.parse_args(argv)
    from ..modeling import ModelLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config_path = ns.config if ns.config is not None else (Path("params.yaml") if Path("params.yaml").is_file() else None)
        cfg = load_config(config_path, ns.profile, ns.overrides)
        evals = None
        if ns.eval_file is not None:
            evals = as_records(ns.eval_file)
            if len(evals) > ns.eval_n:
                evals = random.Random(cfg.seed).sample(evals, ns.eval_n)
        lineage = json.loads(ns.lineage.read_text()) if ns.lineage else None
        summary = train_sft(
            cfg, ns.data, ns.out, base_model=ns.base_model, lineage=lineage, eval_records=evals,
            resume=not ns.no_resume, progress=not ns.no_progress,
        )
    except (ConfigError, TrainingDataError, RecordError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if summary:
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
