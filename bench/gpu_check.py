"""The training paths CI cannot run, run on a machine with one NVIDIA GPU.

    python bench/gpu_check.py [--data ../shared/data] [--out bench/results/gpu_check.json]

1. ``sft_full``: ``train_sft`` on CUDA with the tiny-cpu recipe plus ``sft.bf16`` and
   ``sft.gradient_checkpointing`` (what the GPU profiles set), then greedy parse rate / F1 on
   200 CoNLL-2003 test sentences on the GPU.
2. ``sft_lora``: the same with ``sft.finetune=lora`` (merged at export).
3. ``grpo``: ``train_grpo`` from the ``sft_full`` model on CUDA (bf16, gradient checkpointing).
4. ``head``: the completion-only LM head against the full-logit loss on a Qwen3-shaped model
   with Qwen3's 151,936-token vocabulary (random weights, bf16): loss agreement, peak GPU memory
   and time of one forward + backward, 8 x 2048 tokens with the last 512 of each as completion.
   On CUDA with Triton the head is trl's chunked log-prob kernel.

Every result (and the runtime notes each trainer reported) goes to ``--out``. Nothing is asserted
here: this is a measurement, the numbers are recorded in docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _stage(results: dict[str, Any], name: str, fn: Any, *args: Any) -> Any:
    """Run one stage, keep going on failure (each stage's error is a result too)."""
    started = time.perf_counter()
    try:
        value = fn(*args)
        results[name] = {"ok": True, "seconds": round(time.perf_counter() - started, 1), **(value or {})}
        return value
    except Exception as exc:  # noqa: BLE001 - recorded, then the next stage runs
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print(results[name]["traceback"], file=sys.stderr, flush=True)
        return None


def environment() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    props = torch.cuda.get_device_properties(0)
    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "cuda": torch.version.cuda, "gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "bf16": torch.cuda.is_bf16_supported()}


def sft_run(prepared: Path, tiny: Path, train: Path, evals: list[Any], out: Path, overrides: list[str]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasoning_ner.config import load_config
    from reasoning_ner.training.generate import generate_and_score
    from reasoning_ner.training.sft import train_sft

    cfg = load_config(profile="tiny-cpu", overrides=["sft.bf16=true", "sft.gradient_checkpointing=true",
                                                     "sft.save_steps=0", "sft.logging_steps=10", *overrides])
    summary = train_sft(cfg, [train], out, base_model=str(tiny), resume=False, progress=False)
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"]).to("cuda")
    scores, gens = generate_and_score(model, AutoTokenizer.from_pretrained(summary["model_dir"]), evals, cfg.prompt, 96)
    keep = ("steps", "train_loss_first", "train_loss_last", "train_seconds", "steps_per_second", "runtime_notes", "examples")
    return {**{k: summary.get(k) for k in keep}, "model_dir": summary["model_dir"], "dtype": str(model.dtype),
            "heldout": {k: scores[k] for k in ("n", "parse_rate", "f1", "precision", "recall")}, "example": gens[0]}


def grpo_run(prepared: Path, sft_dir: str, out: Path) -> dict[str, Any]:
    from reasoning_ner.config import load_config
    from reasoning_ner.training.grpo import train_grpo

    cfg = load_config(profile="tiny-cpu", overrides=["grpo.bf16=true", "grpo.gradient_checkpointing=true",
                                                     "grpo.rl_sample_size=64", "grpo.save_steps=0"])
    summary = train_grpo(cfg, sft_dir, [prepared / "conll2003" / "train.jsonl"], out, max_steps=8, resume=False)
    keep = ("global_steps", "train_seconds", "device", "first_metrics", "final_metrics", "trl_args")
    return {k: summary.get(k) for k in keep}


def head_comparison() -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from reasoning_ner.training.sft import add_completion_head

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=4,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(config).to("cuda", torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    batch, seq, completion = 8, 2048, 512
    ids = torch.randint(0, config.vocab_size, (batch, seq), device="cuda")
    labels = ids.clone()
    labels[:, : seq - completion] = -100

    def full_logits() -> torch.Tensor:
        logits = model(input_ids=ids).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)

    def completion_only() -> torch.Tensor:
        return model(input_ids=ids, completion_labels=labels).loss

    add_completion_head(model)
    out: dict[str, Any] = {"shape": {"batch": batch, "seq": seq, "completion_tokens": completion, "vocab": config.vocab_size,
                                     "hidden": config.hidden_size, "layers": config.num_hidden_layers}}
    for name, fn in (("full_logits", full_logits), ("completion_only", completion_only)) * 2:  # second round timed
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        started = time.perf_counter()
        loss = fn()
        loss.backward()
        torch.cuda.synchronize()
        out[name] = {"loss": float(loss), "seconds": round(time.perf_counter() - started, 4),
                     "peak_extra_gib": round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)}
    out["memory_ratio"] = out["full_logits"]["peak_extra_gib"] / max(out["completion_only"]["peak_extra_gib"], 1e-9)
    out["loss_abs_diff"] = abs(out["full_logits"]["loss"] - out["completion_only"]["loss"])
    from reasoning_ner.training.loss import _use_fused_kernel

    out["fused_kernel"] = _use_fused_kernel(torch.device("cuda"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RNER_DATA_DIR", REPO.parent / "shared" / "data")))
    parser.add_argument("--work", type=Path, default=Path("/tmp/rner-gpu-check"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "gpu_check.json")
    parser.add_argument("--sft-steps", type=int, default=300)
    ns = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "bench"))
    from sft_learning import offline_cot_records  # noqa: E402 - the same data recipe as the CPU bench

    from reasoning_ner.config import load_config
    from reasoning_ner.data.prepare import prepare
    from reasoning_ner.modeling import init_tiny
    from reasoning_ner.records import read_records, write_jsonl

    results: dict[str, Any] = {"environment": environment()}
    prepared = ns.work / "data"
    prepare("conll2003,pile_ner", ns.data, prepared, progress=False)
    cfg = load_config(profile="tiny-cpu")
    tiny = ns.work / "tiny-base"
    init_tiny(tiny, cfg.model.tiny, data_dir=prepared, prompt_cfg=cfg.prompt)
    train = ns.work / "cot.jsonl"
    write_jsonl(train, offline_cot_records(prepared, {"conll2003": 14000, "pile_ner": 100}, seed=0))
    evals = random.Random(0).sample(read_records(prepared / "conll2003" / "test.jsonl"), 200)

    full = _stage(results, "sft_full", sft_run, prepared, tiny, train, evals, ns.work / "sft-full",
                  [f"sft.max_steps={ns.sft_steps}"])
    _stage(results, "sft_lora", sft_run, prepared, tiny, train, evals, ns.work / "sft-lora",
           ["sft.max_steps=100", "sft.finetune=lora", "sft.learning_rate=2e-3"])
    if full:
        _stage(results, "grpo", grpo_run, prepared, full["model_dir"], ns.work / "grpo")
    _stage(results, "head", head_comparison)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps({k: (v if k == "environment" else {kk: vv for kk, vv in v.items() if kk != "traceback"})
                      for k, v in results.items()}, indent=1, default=str))
    return 0 if all(v.get("ok", True) for v in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
