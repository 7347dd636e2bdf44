"""Stage 2 (CoT tuning with trl's SFTTrainer) and the helpers later stages share.

Modules (each imports torch/transformers/trl lazily, so ``import reasoning_ner.training`` is cheap):

* :mod:`.sft`      -- ``train_sft``: records -> prompt/completion data (:mod:`.sft_data`) -> trl
                      ``SFTTrainer`` subclass (:mod:`.sft_trainer`; loss and LM head only at completion
                      positions, :mod:`.loss`) -> export.
* :mod:`.grpo`     -- ``train_grpo`` (stage 3): trl's GRPOTrainer with the paper's reward; its trainer
                      config in :mod:`.grpo_config`, curves and card in :mod:`.grpo_report`, RL data in
                      :mod:`.rl_data`.
* :mod:`.run`      -- what both stages share: the ``python -m`` options and config, resume, ZeRO-3
                      checks, gathering weights. :mod:`.runtime`: GPU options, dtype, LoRA, DeepSpeed.
* :mod:`.export`   -- merge LoRA, save a Hugging Face directory with tokenizer, generation config and
                      a model card.
* :mod:`.plots`    -- ``plot_curves``: PNG curves from a trainer's ``log_history`` (loss, rewards, ...).
* :mod:`.generate` -- the evaluation's generation loop on a model in memory, and quick scoring.
"""

from __future__ import annotations

__all__ = ["train_sft", "export_model", "plot_curves", "generate", "score_generations"]


def __getattr__(name: str):  # lazy re-exports: no torch import until used
    if name == "train_sft":
        from .sft import train_sft

        return train_sft
    if name == "export_model":
        from .export import export_model

        return export_model
    if name == "plot_curves":
        from .plots import plot_curves

        return plot_curves
    if name in ("generate", "score_generations"):
        from . import generate as _generate

        return getattr(_generate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
