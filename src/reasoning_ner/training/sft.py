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
import hashlib
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, config_fingerprint
from ..lineage import file_md5
from ..records import NERRecord, write_json
# The pieces live in small modules (data, runtime, loss, trainer, run); their names stay importable from
# here (listed in __all__).
from .loss import CompletionLMOutput, add_completion_head, completion_nll
from .run import (
    RUN_ERRORS, add_config_options, add_run_options, config_from_args, gather_full_weights, is_main_process,
    read_lineage, refuse_lora_under_zero3, run_cli, train_with_resume,
)
from .runtime import (
    FP32MasterAdamW, RuntimeSettings, build_sft_args, compile_decoder_layers, deepspeed_launch, last_checkpoint,
    load_for_training, lora_config, resolve_runtime, training_dtype,
)
from .sft_data import (
    IGNORE_INDEX, TrainingDataError, ZeroShotDataError, as_records, has_trainable_labels, keep_last_tokens,
    load_sft_records, sft_example,
)
from .sft_trainer import (
    CompletionOnlySFTTrainer, LengthBucketSampler, NonFiniteLossCallback, NonFiniteLossError, build_trainer,
)

__all__ = [
    # this module: the run and its entry point
    "default_lineage", "main", "train_sft",
    # loss.py
    "CompletionLMOutput", "add_completion_head", "completion_nll",
    # runtime.py
    "FP32MasterAdamW", "RuntimeSettings", "build_sft_args", "compile_decoder_layers", "deepspeed_launch",
    "last_checkpoint", "load_for_training", "lora_config", "resolve_runtime", "training_dtype",
    # sft_data.py
    "IGNORE_INDEX", "TrainingDataError", "ZeroShotDataError", "as_records", "has_trainable_labels",
    "keep_last_tokens", "load_sft_records", "sft_example",
    # sft_trainer.py
    "CompletionOnlySFTTrainer", "LengthBucketSampler", "NonFiniteLossCallback", "NonFiniteLossError", "build_trainer",
]

logger = logging.getLogger(__name__)


def default_lineage(train_files: Sequence[Path], records: Sequence[NERRecord]) -> dict[str, Any]:
    teachers = Counter(str(r.meta.get("teacher", "unknown")) for r in records)
    return {
        "train_files": [{"path": str(p), "md5": file_md5(Path(p)), "bytes": Path(p).stat().st_size} for p in train_files],
        "records_per_dataset": dict(sorted(Counter(r.dataset for r in records).items())),
        "cot_teachers": dict(teachers),
    }


def _loss_points(history: list[dict[str, Any]]) -> list[float]:
    return [float(e["loss"]) for e in history if "loss" in e and isinstance(e["loss"], (int, float))]


@dataclass
class _SFTSetup:
    """A built trainer and what the run needs of its construction later on."""

    trainer: Any
    tokenizer: Any
    base_model: str
    runtime: RuntimeSettings
    guard: NonFiniteLossCallback
    zero3: bool
    eval_with_cot: list[NERRecord]


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
    checkpoint_dir = output_dir / "checkpoints"
    run = _build_sft_trainer(cfg, records, evals, checkpoint_dir, base_model, progress, callbacks, trainer_args)
    trainer = run.trainer

    train_output, resume_from = train_with_resume(trainer, checkpoint_dir, resume)
    history = list(trainer.state.log_history)
    main = is_main_process(trainer)
    if main:
        _write_loss_log(cfg, history, output_dir)
    _raise_if_diverged(cfg, run.guard, checkpoint_dir, output_dir)
    metrics = _training_metrics(run, train_output, history)

    state_dict = gather_full_weights(trainer, run.zero3)
    summary: dict[str, Any] = {}
    if main:
        counts = _export_sft_model(
            cfg, run, records, evals, train_files, lineage, trainer_args, metrics, state_dict, output_dir / "model"
        )
        summary = {
            "steps": trainer.state.global_step,
            "train_loss_first": metrics["train_loss_first"],
            "train_loss_last": metrics["train_loss_last"],
            "seconds": round(time.perf_counter() - started, 2),
            "train_seconds": round(float(train_output.metrics.get("train_runtime", 0.0)), 2),
            "steps_per_second": train_output.metrics.get("train_steps_per_second"),
            "output_dir": str(output_dir),
            "model_dir": str(output_dir / "model"),
            "resumed_from": resume_from,
            "examples": counts,
            "metrics": metrics,
            "runtime_notes": run.runtime.notes,
            "base_model": run.base_model,
        }
        write_json(output_dir / "summary.json", summary)
    trainer.accelerator.wait_for_everyone()
    return summary


def _build_sft_trainer(
    cfg: Config,
    records: list[NERRecord],
    evals: list[NERRecord],
    checkpoint_dir: Path,
    base_model: str | None,
    progress: bool,
    callbacks: list[Any] | None,
    trainer_args: dict[str, Any] | None,
) -> _SFTSetup:
    """Runtime, ``SFTConfig``, base model and trainer, with the divergence guard bound to it."""
    runtime = resolve_runtime(cfg.sft)
    for note in runtime.notes:
        logger.info("sft runtime: %s", note)
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
    zero3 = refuse_lora_under_zero3(trainer, "sft", cfg.sft.finetune, ConfigError, "; use one GPU or DDP")
    return _SFTSetup(trainer, tokenizer, name, runtime, guard, zero3, eval_with_cot)


def _write_loss_log(cfg: Config, history: list[dict[str, Any]], output_dir: Path) -> None:
    """``log_history.json`` and ``loss.png`` (with ``eval_loss`` when it was logged)."""
    from .plots import plot_curves

    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "log_history.json", history)
    keys = ["loss"] + (["eval_loss"] if any("eval_loss" in e for e in history) else [])
    plot_curves(history, keys, output_dir / "loss.png", f"SFT loss ({cfg.profile}, {cfg.sft.finetune})")


def _raise_if_diverged(cfg: Config, guard: NonFiniteLossCallback, checkpoint_dir: Path, output_dir: Path) -> None:
    """After the log and plot are written, so the diverged step can be looked at."""
    if guard.event is None:
        return
    raise NonFiniteLossError(
        f"training diverged: non-finite loss or gradient norm ({guard.event['loss']}) at step {guard.event['step']}; "
        f"training stopped and no model was exported. The model diverged: lower sft.learning_rate (now {cfg.sft.learning_rate:g}) "
        f"or check the data. Last checkpoint (written before the divergence): "
        f"{last_checkpoint(checkpoint_dir) or 'none'}. Log: {output_dir / 'log_history.json'}"
    )


def _training_metrics(run: _SFTSetup, train_output: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps, epochs and train losses; the eval loss (every process) when there are CoT eval records."""
    losses = _loss_points(history)
    state = run.trainer.state
    metrics: dict[str, Any] = {
        "global_step": state.global_step,
        "epochs": round(float(state.epoch or 0.0), 4),
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": float(train_output.training_loss),
    }
    if run.eval_with_cot:
        metrics["eval_loss"] = float(run.trainer.evaluate()["eval_loss"])
    return metrics


def _export_sft_model(
    cfg: Config,
    run: _SFTSetup,
    records: list[NERRecord],
    evals: list[NERRecord],
    train_files: list[Path],
    lineage: dict[str, Any] | None,
    trainer_args: dict[str, Any] | None,
    metrics: dict[str, Any],
    state_dict: dict[str, Any] | None,
    model_dir: Path,
) -> dict[str, int]:
    """Main process: score greedy generations (into ``metrics``), export the merged model with its
    card; returns the example counts (kept, truncated, dropped)."""
    from .export import export_model, merge_lora

    trainer = run.trainer
    final = merge_lora(trainer.model)
    if evals and trainer.accelerator.num_processes == 1:
        metrics.update(_generation_scores(cfg, final, run.tokenizer, evals))
    counts = trainer.example_counts.get("train", {"examples": len(records), "truncated": 0, "dropped": 0})
    export_model(
        final, run.tokenizer, model_dir, base_model=run.base_model, stage="SFT",
        datasets=sorted({r.dataset for r in records if r.dataset}),
        lineage={**default_lineage(train_files, records), **(lineage or {})},
        hyperparameters=_sft_hyperparameters(cfg, run.runtime, counts, trainer.accelerator.num_processes, trainer_args),
        metrics=metrics, state_dict=state_dict, max_new_tokens=cfg.sft.eval_max_new_tokens,
    )
    return counts


def _generation_scores(cfg: Config, model: Any, tokenizer: Any, evals: list[NERRecord]) -> dict[str, Any]:
    """Parse rate and paper-parity F1 of greedy generations on ``evals``."""
    from .generate import generate_and_score

    max_new = cfg.sft.eval_max_new_tokens or min(2 * cfg.sft.max_length, 2048)
    scores, _ = generate_and_score(
        model, tokenizer, evals, cfg.prompt, max_new_tokens=max_new, batch_size=cfg.sft.per_device_train_batch_size
    )
    return {"eval_n": scores["n"], "eval_parse_rate": scores["parse_rate"], "eval_f1": scores["f1"]}


def _sft_hyperparameters(
    cfg: Config, runtime: RuntimeSettings, counts: dict[str, int], world: int, trainer_args: dict[str, Any] | None
) -> dict[str, Any]:
    """The settings recorded in the model card: the sft section, what the runtime really used, the data."""
    s = cfg.sft
    return {
        "profile": cfg.profile,
        "finetune": s.finetune,
        **({"lora_r": s.lora_r, "lora_alpha": s.lora_alpha, "lora_dropout": s.lora_dropout}
           if s.finetune == "lora" else {}),
        "learning_rate": s.learning_rate,
        "lr_scheduler_type": s.lr_scheduler_type,
        "warmup_ratio": s.warmup_ratio,
        "weight_decay": s.weight_decay,
        "num_train_epochs": s.num_train_epochs,
        "max_steps": s.max_steps,
        "per_device_train_batch_size": s.per_device_train_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "processes": world,
        "effective_batch_size": s.per_device_train_batch_size * s.gradient_accumulation_steps * world,
        "max_length": f"{s.max_length} (left-truncated: last tokens kept)",
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


# ============================================================================================
# Thin entry point (for `accelerate launch -m reasoning_ner.training.sft ...`)
# ============================================================================================


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reasoning_ner.training.sft", description=__doc__.splitlines()[0])
    add_config_options(parser)
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="canonical CoT JSONL file(s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--base-model", default=None, help="hub name or path (default: config model.base_model)")
    parser.add_argument("--eval", dest="eval_file", type=Path, default=None, help="JSONL records for the final check")
    parser.add_argument("--eval-n", type=int, default=200, help="seeded sample size of --eval records")
    add_run_options(parser)
    parser.add_argument("--no-progress", action="store_true")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def train() -> dict[str, Any]:
        cfg = config_from_args(ns)
        evals = None
        if ns.eval_file is not None:
            evals = as_records(ns.eval_file)
            if len(evals) > ns.eval_n:
                evals = random.Random(cfg.seed).sample(evals, ns.eval_n)
        return train_sft(
            cfg, ns.data, ns.out, base_model=ns.base_model, lineage=read_lineage(ns.lineage), eval_records=evals,
            resume=not ns.no_resume, progress=not ns.no_progress,
        )

    code, summary = run_cli(train, (RUN_ERRORS + (TrainingDataError,), 2), ((NonFiniteLossError,), 3))
    if summary:
        print(json.dumps(summary, indent=2, default=str))
    return code


if __name__ == "__main__":
    sys.exit(main())
