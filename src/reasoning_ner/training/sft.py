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
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, config_fingerprint, load_config
from ..lineage import file_md5
from ..records import NERRecord, RecordError, write_json
# The pieces live in small modules (data, runtime, loss, trainer); their names stay importable from here.
from .loss import CompletionLMOutput, add_completion_head, completion_nll  # noqa: F401
from .runtime import (  # noqa: F401
    FP32MasterAdamW, RuntimeSettings, build_sft_args, compile_decoder_layers, deepspeed_launch, last_checkpoint,
    load_for_training, lora_config, resolve_runtime, training_dtype,
)
from .sft_data import (  # noqa: F401
    IGNORE_INDEX, TrainingDataError, ZeroShotDataError, as_records, has_trainable_labels, keep_last_tokens,
    load_sft_records, sft_example,
)
from .sft_trainer import (  # noqa: F401
    CompletionOnlySFTTrainer, LengthBucketSampler, NonFiniteLossCallback, NonFiniteLossError, build_trainer,
)

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
