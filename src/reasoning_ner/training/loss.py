"""The completion-only LM head: the LM head and cross-entropy run on completion positions only (on CUDA
with Triton through trl's chunked log-prob kernel), installed as a forward patch so DDP, DeepSpeed and
PEFT wrappers call it unchanged; see :mod:`.sft` for why and what it saves."""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import ModelOutput

from .sft_data import IGNORE_INDEX

#: Above this many logits (tokens x vocabulary) per micro-batch the plain LM head runs in
#: checkpointed chunks, so e.g. 16 x 8192 completion tokens x 151k vocabulary never materialize.
_MAX_LOGITS_PER_BLOCK = 1 << 26


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
