"""trl's ``SFTTrainer`` with the completion-only loss, left truncation, length-bucketed batches and a stop
on a non-finite loss; :func:`build_trainer` puts it together from the configuration."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from ..config import Config, ConfigError
from ..records import NERRecord
from .loss import add_completion_head
from .runtime import (
    FP32MasterAdamW, RuntimeSettings, build_sft_args, compile_decoder_layers, lora_config, resolve_runtime,
)
from .sft_data import TrainingDataError, has_trainable_labels, keep_last_tokens, sft_example

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""



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
        self, *args: Any, max_length: int | None = None, torch_compile: bool = False, bf16_weights: bool = False,
        unlikelihood_weight: float = 0.0, **kwargs: Any
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

        if unlikelihood_weight < 0:
            raise ValueError(f"unlikelihood_weight must be >= 0, got {unlikelihood_weight}")
        self.unlikelihood_weight = float(unlikelihood_weight)
        add_completion_head(self.model.get_base_model() if is_peft_model(self.model) else self.model,
                            unlikelihood=self.unlikelihood_weight > 0)
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
        objective_sum = outputs.nll_sum
        if outputs.unlikelihood_sum is not None:
            objective_sum = objective_sum + self.unlikelihood_weight * outputs.unlikelihood_sum
            per_token = (outputs.unlikelihood_sum / outputs.n_tokens.clamp(min=1)).detach()
            self._metrics[mode].setdefault("unlikelihood", []).append(float(self.accelerator.gather_for_metrics(per_token).mean()))
        if num_items_in_batch is not None:
            loss = objective_sum / num_items_in_batch
            if self.args.average_tokens_across_devices:
                # Like Trainer.compute_loss: the count covers every rank and DDP averages gradients.
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        else:
            loss = objective_sum / outputs.n_tokens.clamp(min=1)
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
        kwargs.update(max_length=cfg.sft.max_length, torch_compile=runtime.torch_compile, bf16_weights=runtime.bf16_weights,
                      unlikelihood_weight=cfg.sft.unlikelihood_weight)
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
