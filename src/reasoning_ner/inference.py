"""Batch inference: one interface, two backends.

* :class:`TransformersEngine`: in-process greedy decoding (CPU or GPU), left padding,
  length-sorted batches (about 5x faster than one by one on the tiny CPU model, with identical
  greedy output), stop on ``<|im_end|>``. On CPU its own loop drops rows that have stopped (1.55x
  on the tiny model, whose batches often wait for one looping answer; bench/decode_speed.py); on GPU
  transformers ``generate``. Both give the same tokens (tests/test_sft_learning.py).
* :class:`VLLMEngine`: vLLM offline (``LLM.generate`` with greedy ``SamplingParams``), the
  reference's evaluation engine; chosen automatically when vLLM imports and a GPU is present.

Both take ChatML prompt strings and return :class:`Generation` objects in input order.
:func:`predict` turns records into per-sentence predictions: raw generation, parsed answer,
grounded entities, ungrounded spans, parse error, tokens and latency.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .config import PromptConfig
from .grounding import ground
from .parsing import parse_answer
from .prompt import IM_END, chatml, render_prompt
from .records import NERRecord


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time of the batch this prompt was in, shared equally
    finish_reason: str = "stop"  # "stop" or "length"


class InferenceEngine(Protocol):
    name: str

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]: ...


def stop_token_ids(tokenizer: Any, stop_token: str = IM_END) -> list[int]:
    """Token ids that end a generation: ``stop_token`` (``<|im_end|>``) and the tokenizer's eos."""
    ids: list[int] = []
    for candidate in (tokenizer.convert_tokens_to_ids(stop_token), tokenizer.eos_token_id):
        if isinstance(candidate, int) and candidate >= 0 and candidate != tokenizer.unk_token_id and candidate not in ids:
            ids.append(candidate)
    if not ids:
        raise ValueError(f"tokenizer has neither {stop_token!r} nor an eos token to stop generation at")
    return ids


class TransformersEngine:
    """Greedy batched generation with a Hugging Face causal LM: the project's one generation loop.

    Evaluation, the SFT/GRPO learning checks (:mod:`training.generate`) and the in-process server
    all decode here, so the F1 seen during training and the evaluation's F1 read the same text:
    prompts tokenized as rendered (the ChatML string carries every special token), left-padded,
    longest first (a batch that does not fit fails at once), cut at the first stop token and decoded
    without special tokens, as vLLM returns text (``<think>`` tags are ordinary tokens, so they stay).
    Batched and one-by-one greedy output are the same (tests/test_evaluation.py).
    """

    def __init__(self, model_dir: str, batch_size: int = 32, device: str | None = None, dtype: str = "auto",
                 model: Any = None, tokenizer: Any = None, stop_token: str = IM_END):
        import torch

        from .modeling import load_model_and_tokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if model is None or tokenizer is None:
            model, tokenizer = load_model_and_tokenizer(model_dir, dtype=dtype, device=self.device)
            model.eval()
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.name = f"transformers:{model_dir}"
        self.stop_ids = stop_token_ids(tokenizer, stop_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any, batch_size: int = 32, stop_token: str = IM_END) -> TransformersEngine:
        """An engine over a model already in memory (a trainer's), left in the mode it was in."""
        return cls(getattr(model, "name_or_path", "") or "in-memory", batch_size=batch_size, model=model,
                   tokenizer=tokenizer, stop_token=stop_token)

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        import torch
        from transformers import GenerationConfig

        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), i))
        # A full config, not keyword overrides: a checkpoint's own generation_config (Qwen3 ships
        # do_sample with temperature 0.6) must not turn greedy evaluation into sampling.
        gen_cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                   eos_token_id=self.stop_ids, pad_token_id=self.pad_id)
        results: list[Generation | None] = [None] * len(prompts)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(encoded[i]) for i in idx)
                input_ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
                attention = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids = encoded[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                    attention[row, width - len(ids) :] = 1
                t0 = time.perf_counter()
                with torch.inference_mode():
                    if self._prunes_finished_rows():
                        completions = self._greedy_pruning_finished(input_ids.to(device), attention.to(device), max_new_tokens)
                    else:
                        out = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                                  generation_config=gen_cfg)
                        completions = [out[row, width:].tolist() for row in range(len(idx))]
                elapsed = time.perf_counter() - t0
                for row, i in enumerate(idx):
                    results[i] = self._generation(completions[row], len(encoded[i]), elapsed / len(idx))
        finally:
            if was_training:
                self.model.train()
        return [r for r in results if r is not None]

    def _prunes_finished_rows(self) -> bool:
        # On CPU a decoding step costs in proportion to the rows it computes, and ``generate`` keeps
        # computing rows that have stopped until the batch's longest (often a repetition loop that
        # runs to the limit) ends. GPUs are latency-bound at these batch sizes: keep ``generate``.
        from transformers import DynamicCache

        return next(self.model.parameters()).device.type == "cpu" and hasattr(DynamicCache, "batch_select_indices")

    def _greedy_pruning_finished(self, input_ids: Any, attention: Any, max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding that drops each row from the batch (and its KV cache) once it emits a stop
        token: the same tokens as ``generate`` (left padding, positions from the attention mask)."""
        import torch
        from transformers import DynamicCache

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        # transformers renamed `past_key_values` to `cache` (the old name warns until 5.40).
        cache_kw = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
        rows = input_ids.shape[0]
        tokens: list[list[int]] = [[] for _ in range(rows)]
        alive = torch.arange(rows, device=input_ids.device)
        stop = torch.tensor(self.stop_ids, device=input_ids.device)
        cache = DynamicCache(config=base.config)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        step_ids, step_positions = input_ids, positions
        for _ in range(max_new_tokens):
            logits = self.model(input_ids=step_ids, attention_mask=attention, position_ids=step_positions,
                                use_cache=True, logits_to_keep=1, **{cache_kw: cache}).logits[:, -1]
            chosen = logits.argmax(dim=-1)
            for row, token in zip(alive.tolist(), chosen.tolist()):
                tokens[row].append(token)
            running = ~torch.isin(chosen, stop)
            if not bool(running.any()):
                break
            if not bool(running.all()):
                keep = running.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                alive, chosen, attention, step_positions = alive[keep], chosen[keep], attention[keep], step_positions[keep]
            step_ids = chosen[:, None]
            step_positions = step_positions[:, -1:] + 1
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
        return tokens

    def _generation(self, tokens: list[int], prompt_tokens: int, latency_s: float) -> Generation:
        stopped = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
        kept = tokens if stopped is None else tokens[:stopped]
        return Generation(
            text=self.tokenizer.decode(kept, skip_special_tokens=True),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(kept) + (0 if stopped is None else 1),
            latency_s=latency_s,
            finish_reason="length" if stopped is None else "stop",
        )


class VLLMEngine:
    """vLLM offline inference (GPU). Same semantics: greedy, stop on ``<|im_end|>``."""

    def __init__(self, model_dir: str, max_model_len: int = 8192, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, **llm_kwargs: Any):
        from vllm import LLM  # only in the GPU image

        self.llm = LLM(
            model=model_dir,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            **llm_kwargs,
        )
        self.name = f"vllm:{model_dir}"

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=[IM_END])
        t0 = time.perf_counter()
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        share = (time.perf_counter() - t0) / max(1, len(prompts))
        gens = []
        for out in outputs:
            completion = out.outputs[0]
            gens.append(Generation(
                text=completion.text,
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(completion.token_ids),
                latency_s=share,
                finish_reason=completion.finish_reason or "stop",
            ))
        return gens


def vllm_available() -> bool:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def make_engine(model_dir: str, backend: str = "auto", batch_size: int = 32, **kwargs: Any) -> InferenceEngine:
    """``auto`` picks vLLM when it imports and a GPU is present, else transformers."""
    if backend == "auto":
        backend = "vllm" if vllm_available() else "transformers"
    if backend == "vllm":
        return VLLMEngine(model_dir, **kwargs)
    if backend == "transformers":
        return TransformersEngine(model_dir, batch_size=batch_size, **kwargs)
    raise ValueError(f"unknown inference backend {backend!r}; use auto, transformers or vllm")


def predict(engine: InferenceEngine, records: Sequence[NERRecord], prompt_cfg: PromptConfig, max_new_tokens: int) -> list[dict[str, Any]]:
    """Per-sentence predictions, in record order (the JSONL rows ``rner eval score`` reads)."""
    prompts = [chatml(render_prompt(r.text, r.schema, prompt_cfg.style)) for r in records]
    gens = engine.generate(prompts, max_new_tokens)
    rows = []
    for record, gen in zip(records, gens):
        parsed = parse_answer(gen.text, record.schema)
        grounding = ground(record.text, parsed.entities)
        rows.append({
            "id": record.id,
            "dataset": record.dataset,
            "output": gen.text,
            "answer": parsed.entities,
            "entities": [asdict(e) for e in grounding.entities],
            "ungrounded": [list(p) for p in grounding.ungrounded],
            "parse_error": parsed.error,
            "out_of_schema": parsed.out_of_schema,
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "finish_reason": gen.finish_reason,
            "latency_s": round(gen.latency_s, 5),
        })
    return rows
