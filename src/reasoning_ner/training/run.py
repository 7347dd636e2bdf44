"""What every training stage (SFT, GRPO) does around its trl trainer, in one place.

The command line: the ``--config/--profile/--set`` options and their resolution (``./params.yaml``
when present), ``--lineage`` and ``--no-resume``, and the mapping of expected errors to exit
codes. The run: refusing LoRA under DeepSpeed ZeRO-3, training from the last checkpoint, and
gathering sharded weights before the main process exports. Each stage's module keeps only what
is its own (data, trainer, metrics, model card) and a thin ``main``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, ConfigError, resolve_config
from ..modeling import ModelLoadError
from ..records import RecordError
from .runtime import last_checkpoint

logger = logging.getLogger(__name__)

#: Errors every stage reports as ``error: ...`` with exit code 2 (bad input, not a crash).
RUN_ERRORS: tuple[type[Exception], ...] = (ConfigError, RecordError, ModelLoadError)

# --------------------------------------------------------------------------------- command line


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--profile`` and repeated ``--set key.path=value``, read by :func:`config_from_args`."""
    parser.add_argument("--config", type=Path, default=None, help="YAML config (default: ./params.yaml when present)")
    parser.add_argument("--profile", default=None, help="tiny-cpu, qwen3-1.7b, qwen3-8b")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key.path=value override")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--lineage`` (read by :func:`read_lineage`) and ``--no-resume``."""
    parser.add_argument("--lineage", type=Path, default=None, help="JSON file with lineage for the model card")
    parser.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in <out>/checkpoints")


def config_from_args(ns: argparse.Namespace) -> Config:
    """The config of :func:`add_config_options`, resolved by the rule every entry point shares
    (:func:`reasoning_ner.config.resolve_config`: ``./params.yaml`` unless a file or profile is named)."""
    return resolve_config(ns.config, ns.profile, ns.overrides)


def read_lineage(path: Path | str | None) -> dict[str, Any] | None:
    return json.loads(Path(path).read_text()) if path else None


def run_cli(
    train: Callable[[], dict[str, Any]], *exit_codes: tuple[tuple[type[Exception], ...], int]
) -> tuple[int, dict[str, Any]]:
    """``(0, train())``; an error listed in ``exit_codes`` prints ``error: ...`` and gives its code."""
    try:
        return 0, train()
    except Exception as exc:
        for errors, code in exit_codes:
            if isinstance(exc, errors):
                print(f"error: {exc}", file=sys.stderr)
                return code, {}
        raise


# ------------------------------------------------------------------------------------ the run


def is_main_process(trainer: Any) -> bool:
    return bool(trainer.is_world_process_zero())


def zero3_enabled(trainer: Any) -> bool:
    """DeepSpeed ZeRO-3: every rank holds a shard of the weights."""
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return False
    return getattr(getattr(trainer.accelerator.state, "deepspeed_plugin", None), "zero_stage", 0) == 3


def refuse_lora_under_zero3(
    trainer: Any, section: str, finetune: str, error: type[Exception], hint: str = ""
) -> bool:
    """Whether the run is ZeRO-3; raises ``error`` for LoRA there (merging adapters needs the full weights)."""
    zero3 = zero3_enabled(trainer)
    if zero3 and finetune == "lora":
        raise error(f"{section}.finetune=lora with DeepSpeed ZeRO-3 is not supported (merging needs full weights){hint}")
    return zero3


def train_with_resume(trainer: Any, checkpoint_dir: Path, resume: bool) -> tuple[Any, str | None]:
    """``trainer.train()`` from the newest checkpoint in ``checkpoint_dir`` (when ``resume``); returns
    the train output and the checkpoint resumed from (None for a fresh start)."""
    resume_from = last_checkpoint(checkpoint_dir) if resume else None
    if resume_from:
        logger.info("resuming from %s", resume_from)
    return trainer.train(resume_from_checkpoint=resume_from), resume_from


def gather_full_weights(trainer: Any, zero3: bool) -> dict[str, Any] | None:
    """Under ZeRO-3 the full weights are gathered on every rank (a collective) before rank 0 saves."""
    return trainer.accelerator.get_state_dict(trainer.model_wrapped) if zero3 else None
