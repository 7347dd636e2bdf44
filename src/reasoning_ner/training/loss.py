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
    unlikelihood_sum: torch.Tensor | None = None  # summed, unweighted; None when the term is off


def previous_token_candidates(shift_labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target row (row-major over ``mask``, as ``hidden[mask]`` orders them): the distinct
    tokens of the same completion before it, other than its own target (the negative candidates of
    token-level unlikelihood training, Welleck et al. 2019). Returns ids ``[rows, T]`` and a
    validity mask of the same shape (``T`` = sequence length; ids under a False are meaningless)."""
    targets = torch.where(mask, shift_labels, -1)
    length = targets.shape[1]
    same = (targets[:, :, None] == targets[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    earlier = torch.ones((length, length), dtype=torch.bool, device=targets.device).tril(-1)
    first = mask & ~(same & earlier).any(dim=2)  # a token's first position in its completion
    valid = earlier & first[:, None, :] & ~same
    ids = targets.clamp(min=0)[:, None, :].expand(-1, length, -1)
    return ids[mask], valid[mask]


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
    unlikelihood: bool = False,
) -> CompletionLMOutput:
    """Summed next-token NLL at the positions whose shifted label is not -100.

    Only those rows of ``hidden`` go through the LM head. On CUDA with Triton, trl's chunked
    log-prob kernel computes it without materializing logits; elsewhere the head runs on the
    gathered rows (in checkpointed blocks when tokens x vocabulary would be large).

    ``unlikelihood`` also returns the token-level unlikelihood term, ``-sum log(1 - p(c))`` over
    each position's :func:`previous_token_candidates` (the caller weights it). It needs the
    probabilities of those tokens, so it takes the plain head path, never the fused kernel.
    """
    shift_labels = labels[:, 1:].to(hidden.device)
    mask = shift_labels != IGNORE_INDEX
    rows = hidden[:, :-1][mask]
    targets = shift_labels[mask]
    n_tokens = mask.sum()
    weight = lm_head.weight
    ul_sum = None
    if not unlikelihood and _use_fused_kernel(rows.device):
        from trl.kernels import ChunkedLogProbFunction
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE, maybe_gather_lm_head_ctx

        with maybe_gather_lm_head_ctx(weight, lm_head.bias):
            log_probs = ChunkedLogProbFunction.apply(
                rows, weight, lm_head.bias, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, softcap, logit_scale, ("log_probs",)
            )[0]
        nll_sum = -log_probs.sum()
    else:
        vocab = getattr(lm_head, "out_features", None) or weight.shape[0]

        if unlikelihood:
            cand_ids, cand_valid = previous_token_candidates(shift_labels, mask)
        else:  # one empty column keeps a single block function
            cand_ids = torch.zeros((rows.shape[0], 1), dtype=torch.long, device=rows.device)
            cand_valid = torch.zeros_like(cand_ids, dtype=torch.bool)

        def block(h: torch.Tensor, t: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            logits = lm_head(h).float()
            if logit_scale != 1.0:
                logits = logits * logit_scale
            if softcap is not None:
                logits = torch.tanh(logits / softcap) * softcap
            if not unlikelihood:
                return torch.stack([F.cross_entropy(logits, t, reduction="sum"), logits.new_zeros(())])
            log_probs = logits.log_softmax(dim=-1)
            nll = -log_probs.gather(1, t[:, None]).sum()
            p_candidates = log_probs.gather(1, c).exp()
            ul = -(torch.log1p(-p_candidates.clamp(max=1 - 1e-5)) * v).sum()
            return torch.stack([nll, ul])

        per_block = max(1, _MAX_LOGITS_PER_BLOCK // max(vocab, 1))
        if rows.shape[0] <= per_block:
            sums = block(rows, targets, cand_ids, cand_valid)
        else:
            from torch.utils.checkpoint import checkpoint

            sums = sum(
                checkpoint(block, h, t, c, v, use_reentrant=False)
                for h, t, c, v in zip(rows.split(per_block), targets.split(per_block),
                                      cand_ids.split(per_block), cand_valid.split(per_block))
            )
        nll_sum = sums[0]
        ul_sum = sums[1] if unlikelihood else None
    return CompletionLMOutput(loss=nll_sum / n_tokens.clamp(min=1), nll_sum=nll_sum, n_tokens=n_tokens,
                              unlikelihood_sum=ul_sum)


def add_completion_head(model: Any, unlikelihood: bool = False) -> None:
    """Patch ``model.forward``: with ``completion_labels=...`` it returns a :class:`CompletionLMOutput`
    (with the unlikelihood term when ``unlikelihood``).

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
        return completion_nll(hidden, completion_labels, self.get_output_embeddings(), logit_scale, softcap, unlikelihood)

    model.forward = types.MethodType(_forward, model)
    model._rner_completion_head = True
