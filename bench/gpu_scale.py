"""GPU efficiency of the project's SFT and GRPO paths at the Qwen3-1.7B shape, measured (issue 16).

    python bench/gpu_scale.py [--sft baseline,liger,...] [--grpo hf_generate,static_compiled] [--steps 5]
    python bench/gpu_scale.py --tiny          # the same code on CPU, tiny shape, well under a minute

A randomly initialised model of the Qwen3-1.7B shape (``modeling.build_tiny_model`` with that shape,
embedding resized to Qwen3's 151,936 rows; the project's 6k-token tokenizer) is trained with the
project's SFT pieces (``resolve_runtime``, ``build_sft_args``, ``build_trainer``: the completion-only
trainer ``train_sft`` uses) on 1-2k-token examples built from CoNLL-2003 (consecutive training
sentences joined into one passage, offline-teacher ``full`` chains), with the qwen3-1.7b profile's
settings (bf16, batch 32, gradient checkpointing) plus one configuration's switches. Per
configuration: non-pad tokens/s over the timed steps, MFU = 6 * N * tokens/s / 989e12 (N = every
parameter, tied embedding once; recomputation not counted), peak allocated memory, and a
torch.profiler kernel-time breakdown of one more step (matmul / attention / elementwise / other).
GRPO: ``GRPOTrainer`` as ``train_grpo`` configures it (8 prompts x 8 completions, 256 new tokens),
seconds per step and the share spent inside ``generate``, for HF generate and the faster path.

Configurations run in one process. Liger patches ``modeling_qwen3`` at module level (RMSNorm, MLP,
RoPE), so the module is restored after each configuration; every configuration builds a fresh model.
A configuration that fails or overruns its time slot (``--slot-s``, an alarm) is recorded with its
error; torch may swallow the alarm inside its own compilation (seen once: the backward was then
compiled at the next step), so per-step times are recorded too. The JSON is rewritten after each
configuration, so a run cut short still leaves what it measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: H200 (= H100 SXM) dense bf16 peak, the MFU denominator issue 16 fixes.
PEAK_FLOPS = 989e12

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen3-1.7B(-Base) config.json: 28 layers, hidden 2048, MLP 6144, 16 query / 8 KV heads of 128, tied.
    "qwen3-1.7b": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16,
                   "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960,
                   "rope_theta": 1_000_000.0, "vocab": 151936},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024, "rope_theta": 10000.0,
             "vocab": None},
}

#: The profile as it ran in shared/reference/gpu-scale.md: fp32 weights under bf16 autocast, gradient
#: checkpointing, sdpa with padded, length-grouped batches (flash-attn is not on the lent GPU).
BASE_OVERRIDES = ["sft.use_liger_kernel=false", "sft.torch_compile=false", "sft.bf16_weights=false",
                  "sft.padding_free=false", "sft.attn_implementation=sdpa", "sft.save_steps=0",
                  "sft.logging_steps=1000", "sft.warmup_ratio=0.0"]
LIGER, BF16W, COMPILE = "sft.use_liger_kernel=true", "sft.bf16_weights=true", "sft.torch_compile=true"
NO_CKPT = ["sft.gradient_checkpointing=false", "sft.per_device_train_batch_size=8", "sft.gradient_accumulation_steps=4"]
#: One switch at a time and together; each builds its own model. Compilation (the slowest to set up
#: and the least certain) runs last, so a time budget cuts it first.
SFT_CONFIGS: dict[str, list[str]] = {
    "baseline": [],
    "liger": [LIGER],
    "bf16_weights": [BF16W],
    "liger+bf16_weights": [LIGER, BF16W],
    "liger+bf16_weights+no_ckpt": [LIGER, BF16W, *NO_CKPT],
    "compile+bf16_weights+no_ckpt": [BF16W, COMPILE, *NO_CKPT],
    "compile": [COMPILE],
    # Not in the default list: gpu-scale.md measured no_ckpt (about +0 % with bf16 weights); "all" fails
    # early since Liger and torch.compile do not combine (Dynamo cannot trace Liger's RMSNorm; measured).
    "no_ckpt": NO_CKPT,
    "all": [LIGER, BF16W, COMPILE, *NO_CKPT],
}
DEFAULT_SFT = [k for k in SFT_CONFIGS if k not in ("no_ckpt", "all")]
GRPO_CONFIGS: dict[str, list[str]] = {
    "hf_generate": ["grpo.generation_cache=dynamic", "grpo.compile_generation=false"],
    "static_cache": ["grpo.generation_cache=static", "grpo.compile_generation=false"],
    "static_compiled": ["grpo.generation_cache=static", "grpo.compile_generation=true"],
}


def mfu(parameters: int, tokens_per_second: float, peak: float = PEAK_FLOPS) -> float:
    """Model FLOPs utilisation: 6 FLOPs per parameter per trained token (forward 2, backward 4)."""
    return 6.0 * parameters * tokens_per_second / peak


# ----------------------------------------------------------------------------------------- data


def long_records(train: list[Any], tokenizer: Any, cfg: Any, n: int, lengths: tuple[int, int], seed: int = 0) -> list[Any]:
    """``n`` CoT records of ``lengths[0]``..``lengths[1]`` tokens (prompt + completion), each a run of
    consecutive CoNLL-2003 training sentences joined into one passage, entities shifted along."""
    from reasoning_ner.cot.offline import offline_chain
    from reasoning_ner.records import Entity, NERRecord
    from reasoning_ner.training.sft import sft_example

    def n_tokens(rec: NERRecord) -> int:
        ex = sft_example(rec, cfg)
        return len(tokenizer(ex["prompt"] + ex["completion"], add_special_tokens=False)["input_ids"])

    rng = random.Random(seed)
    out, i = [], rng.randrange(len(train))
    while len(out) < n:
        target = rng.randint(*lengths)
        text, ents, rec = "", [], None
        while True:
            src = train[i % len(train)]
            i += 1
            offset = len(text) + (1 if text else 0)
            cand_text = f"{text} {src.text}" if text else src.text
            cand_ents = ents + [Entity(e.start + offset, e.end + offset, e.label, e.text) for e in src.entities]
            cand = NERRecord(id=f"gpu-scale-{len(out)}", text=cand_text, entities=cand_ents, schema=list(src.schema),
                             dataset="conll2003", split="train")
            cand.cot = offline_chain(cand, "full")
            if rec is not None and n_tokens(cand) > lengths[1]:
                break  # one sentence too many: keep the previous passage
            text, ents, rec = cand_text, cand_ents, cand
            if n_tokens(rec) >= target:
                break
        out.append(rec)
    return out


def prepare_inputs(ns: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """Tokenizer, SFT records and the RL pool, built once under ``--work`` (carried to the GPU machine)."""
    from transformers import AutoTokenizer

    from reasoning_ner.records import read_records, write_jsonl

    work = ns.work
    tok_dir, sft_file, rl_file = work / "tokenizer", work / f"sft-{ns.examples}-{ns.min_tokens}-{ns.max_tokens}.jsonl", work / "rl.jsonl"
    if not (tok_dir / "tokenizer_config.json").is_file() or not sft_file.is_file() or not rl_file.is_file():
        from reasoning_ner.config import TinyModelConfig
        from reasoning_ner.data.prepare import prepare
        from reasoning_ner.modeling import init_tiny

        prepared = work / "prepared"
        if not (prepared / "conll2003" / "train.jsonl").is_file():
            if ns.data is None or not Path(ns.data).is_dir():
                raise SystemExit(f"no cached inputs under {work} and no --data folder with the raw datasets")
            prepare("conll2003", Path(ns.data), prepared, progress=False)
        if not (tok_dir / "tokenizer_config.json").is_file():
            # The project's 6k-token tokenizer (what `rner model init-tiny` builds), trained on CoNLL-2003.
            init_tiny(tok_dir, TinyModelConfig(tokenizer_corpus_limit=2000 if ns.tiny else 20000), data_dir=prepared,
                      prompt_cfg=cfg.prompt)
            (tok_dir / "model.safetensors").unlink(missing_ok=True)  # only the tokenizer is used
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        train = read_records(prepared / "conll2003" / "train.jsonl")
        write_jsonl(sft_file, long_records(train, tokenizer, cfg, ns.examples, (ns.min_tokens, ns.max_tokens)))
        write_jsonl(rl_file, random.Random(0).sample(train, 256))
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    return {"tokenizer": tokenizer, "tokenizer_dir": tok_dir, "sft_records": read_records(sft_file), "rl_file": rl_file}


# ---------------------------------------------------------------------------------------- model


def build_model(shape: str, tokenizer: Any, device: str, dtype: str) -> Any:
    """A random model of ``shape`` through the project's ``build_tiny_model``, built on ``device``."""
    import torch

    from reasoning_ner.config import TinyModelConfig
    from reasoning_ner.modeling import build_tiny_model

    spec = dict(SHAPES[shape])
    vocab = spec.pop("vocab")
    with torch.device(device):  # initialise on the GPU: seconds instead of a minute on the host
        model = build_tiny_model(tokenizer, TinyModelConfig(**spec))
        if vocab:  # Qwen3's embedding (0.31 B of the 1.72 B): the LM head's real cost
            model.resize_token_embeddings(vocab, mean_resizing=False)
    model.train()
    return model.to(getattr(torch, dtype))


def parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------- measuring

_MATMUL = re.compile(r"gemm|gemv|matmul|nvjet|cutlass|xmma|cublas|sm\d+_.*(?:s|h)\d+gemm|aten::(?:mm|bmm|addmm|linear)|wgmma", re.I)
_ATTENTION = re.compile(r"flash|fmha|attention|sdpa|scaled_dot|efficient_attention|cudnn.*(?:mha|sdpa)", re.I)
_ELEMENTWISE = re.compile(r"elementwise|vectorized|unrolled|reduce|triton_|liger|norm|softmax|copy|cat|fill|index|"
                          r"silu|swiglu|glu|rope|rotary|mul|add|rsqrt|pow|mean|neg|cast|foreach|adam|aten::", re.I)


def kernel_group(name: str) -> str:
    """matmul / attention / elementwise / other, from a kernel (or, on CPU, an op) name."""
    if _ATTENTION.search(name):
        return "attention"
    if _MATMUL.search(name):
        return "matmul"
    if _ELEMENTWISE.search(name):
        return "elementwise"
    return "other"


def breakdown(prof: Any, on_cuda: bool, wall_s: float) -> dict[str, Any]:
    """Kernel time per group (device self time on CUDA, op self time on CPU) and its share."""
    totals = {"matmul": 0.0, "attention": 0.0, "elementwise": 0.0, "other": 0.0}
    top: dict[str, float] = {}
    for evt in prof.key_averages():
        if on_cuda:
            us = float(getattr(evt, "self_device_time_total", 0.0) or 0.0)
            if str(getattr(evt, "device_type", "")).endswith("CUDA") is False and us == 0.0:
                continue
        else:
            us = float(evt.self_cpu_time_total)
            if not evt.key.startswith("aten::"):
                continue
        if us <= 0:
            continue
        totals[kernel_group(evt.key)] += us
        top[evt.key] = top.get(evt.key, 0.0) + us
    busy = sum(totals.values())
    return {
        "kernel_seconds": round(busy / 1e6, 4),
        "step_seconds": round(wall_s, 4),
        "busy_share": round(busy / 1e6 / wall_s, 3) if wall_s > 0 else None,
        "share": {k: round(v / busy, 3) if busy else 0.0 for k, v in totals.items()},
        "top": [[k[:90], round(v / 1e3, 2), kernel_group(k)] for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:12]],
    }


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Alarm(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    """Raise :class:`Alarm` in this thread after ``seconds`` (a stuck compile must not eat the run)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def _raise(*_: Any) -> None:
        raise Alarm(f"time slot of {seconds:.0f} s used up")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def restored_modeling():
    """Undo Liger's module-level patches of the model modules after a configuration."""
    import transformers.models.qwen2.modeling_qwen2 as q2
    import transformers.models.qwen3.modeling_qwen3 as q3

    saved = {m: dict(vars(m)) for m in (q2, q3)}
    try:
        yield
    finally:
        for module, attrs in saved.items():
            for key, value in attrs.items():
                if vars(module).get(key) is not value:
                    setattr(module, key, value)


def cleanup() -> None:
    import torch

    gc.collect()
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001 - best effort between configurations
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def step_timer(warmup: int, steps: int, profile: bool, on_cuda: bool) -> Any:
    """A TrainerCallback timing optimizer steps (synchronised) and profiling the one after the timed ones."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.trainer: Any = None
            self.begin: list[float] = []
            self.end: list[float] = []
            self.tokens: list[int] = []
            self.prof: Any = None
            self.profiled_s = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.tokens.append(int(getattr(self.trainer, "_total_train_tokens", 0)))
            if profile and len(self.begin) == warmup + steps:
                acts = [torch.profiler.ProfilerActivity.CUDA] if on_cuda else [torch.profiler.ProfilerActivity.CPU]
                self.prof = torch.profiler.profile(activities=acts)
                self.prof.start()
            self.begin.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            sync()
            self.end.append(time.perf_counter())
            if self.prof is not None and len(self.end) == warmup + steps + 1:
                self.prof.stop()
                self.profiled_s = self.end[-1] - self.begin[-1]

        def tokens_after(self, k: int) -> int:
            return int(getattr(self.trainer, "_total_train_tokens", 0)) if k >= len(self.tokens) else self.tokens[k]

    return StepTimer()


# ----------------------------------------------------------------------------------------- SFT


def run_sft(name: str, overrides: list[str], ns: argparse.Namespace, inputs: dict[str, Any], device: str) -> dict[str, Any]:
    import torch

    from reasoning_ner.config import load_config
    from reasoning_ner.training.sft import build_sft_args, build_trainer, resolve_runtime, training_dtype

    total = ns.warmup + ns.steps + 1
    cfg = load_config(profile=ns.profile, overrides=[*BASE_OVERRIDES, *ns.sft_base, *overrides, f"sft.max_steps={total}"])
    runtime = resolve_runtime(cfg.sft, device)
    dtype = training_dtype(cfg, runtime)
    on_cuda = device == "cuda"
    timer = step_timer(ns.warmup, ns.steps, True, on_cuda)
    with restored_modeling():
        model = build_model(ns.shape, inputs["tokenizer"], device, dtype)
        n_params = parameters(model)
        if runtime.attn_implementation:
            model.set_attn_implementation(runtime.attn_implementation)
        args = build_sft_args(cfg, ns.work / "ckpt" / name, runtime, progress=False)
        need = total * cfg.sft.per_device_train_batch_size * cfg.sft.gradient_accumulation_steps
        records = inputs["sft_records"][:need]
        trainer = build_trainer(cfg, records, model, inputs["tokenizer"], ns.work / "ckpt" / name,
                                runtime=runtime, args=args, callbacks=[timer], progress=False)
        timer.trainer = trainer
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        trainer.train()
        first, last = ns.warmup, ns.warmup + ns.steps - 1
        seconds = timer.end[last] - timer.begin[first]
        tokens = timer.tokens_after(last + 1) - timer.tokens_after(first)
        tps = tokens / seconds
        step_s = [round(e - b, 3) for b, e in zip(timer.begin, timer.end)]
        step_tokens = [timer.tokens_after(k + 1) - timer.tokens_after(k) for k in range(len(timer.begin))]
        result = {
            "overrides": overrides,
            "runtime": {k: getattr(runtime, k) for k in ("bf16", "bf16_weights", "gradient_checkpointing", "use_liger_kernel",
                                                          "torch_compile", "padding_free", "attn_implementation", "notes")},
            "weights_dtype": dtype,
            "micro_batch": f"{cfg.sft.per_device_train_batch_size} x {cfg.sft.gradient_accumulation_steps}",
            "parameters": n_params,
            "timed_steps": ns.steps,
            "seconds_per_step": round(seconds / ns.steps, 4),
            "step_seconds": step_s,
            "step_tokens": step_tokens,
            "tokens_per_step": round(tokens / ns.steps, 1),
            "tokens_per_second": round(tps, 1),
            "mfu": round(mfu(n_params, tps), 6),
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_cuda else None,
            "train_loss_first_and_mean": [h.get("loss") for h in trainer.state.log_history if "loss" in h][:1]
            + [trainer.state.log_history[-1].get("train_loss")],
            "compiled_layers": getattr(trainer, "compiled_layers", 0),
        }
        if timer.prof is not None:
            result["kernels"] = breakdown(timer.prof, on_cuda, timer.profiled_s)
            # The profiled step is the same batch in every configuration with the same micro-batch: a
            # like-for-like step, free of the one-time costs (kernel JIT, per-shape plans) of early steps.
            prof_tps = step_tokens[-1] / timer.profiled_s
            result["profiled_step"] = {"tokens": step_tokens[-1], "seconds": round(timer.profiled_s, 4),
                                       "tokens_per_second": round(prof_tps, 1), "mfu": round(mfu(n_params, prof_tps), 6)}
        del trainer, model
    return result


# ---------------------------------------------------------------------------------------- GRPO


def run_grpo(name: str, overrides: list[str], ns: argparse.Namespace, inputs: dict[str, Any], device: str) -> dict[str, Any]:
    import torch
    from transformers.trainer_utils import SaveStrategy
    from trl import GRPOTrainer

    from reasoning_ner.config import load_config
    from reasoning_ner.rewards import build_reward_funcs
    from reasoning_ner.training.grpo import apply_generation_settings, build_grpo_config
    from reasoning_ner.training.rl_data import build_rl_dataset

    # The first step is untimed for every configuration: compilation, and for eager generate too
    # (measured: 36 s first step against 15.6 s after, on the H200).
    warmup = ns.grpo_warmup
    total = warmup + ns.grpo_steps
    cfg = load_config(profile=ns.profile, overrides=[
        f"grpo.num_generations={ns.generations}", f"grpo.per_device_train_batch_size={ns.grpo_micro_batch}",
        f"grpo.gradient_accumulation_steps={ns.prompts * ns.generations // ns.grpo_micro_batch}",
        f"grpo.max_completion_length={ns.new_tokens}", "grpo.num_iterations=1", "grpo.save_steps=100000",
        f"grpo.rl_sample_size={ns.prompts * total}", "grpo.warmup_ratio=0.0",
        "grpo.use_vllm=false",  # the HF generate path: no vLLM on the lent GPU machine
        *ns.grpo_base, *overrides])
    tokenizer = inputs["tokenizer"]
    with restored_modeling():
        # trl loads the KL reference model from the policy's path: the random "SFT" model goes to disk
        # once (bf16), and the policy is loaded from it in float32 as train_grpo does for full fine-tuning.
        from transformers import AutoModelForCausalLM

        sft_dir = ns.work / f"grpo-base-{ns.shape}"
        if not (sft_dir / "config.json").is_file():
            build_model(ns.shape, tokenizer, device, "bfloat16").save_pretrained(sft_dir)
            cleanup()
        model = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32, device_map=device)
        reward_funcs, weights = build_reward_funcs(cfg.grpo, tokenizer)
        dataset, _ = build_rl_dataset(cfg, [inputs["rl_file"]], tokenizer=tokenizer)
        args = build_grpo_config(cfg, ns.work / "grpo" / name, reward_weights=weights, device=device, max_steps=total)
        args.save_strategy = SaveStrategy.NO  # the final checkpoint write (~23 s at this size) is not a training step
        timer = step_timer(warmup, ns.grpo_steps, False, device == "cuda")
        trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[timer])
        compiled = apply_generation_settings(trainer, cfg, device)
        timer.trainer = trainer
        gen_calls: list[tuple[float, float]] = []
        generate = model.generate

        def timed_generate(*a: Any, **kw: Any) -> Any:  # instrumentation only: the bench's own model object
            sync()
            t0 = time.perf_counter()
            out = generate(*a, **kw)
            sync()
            gen_calls.append((t0, time.perf_counter()))
            return out

        model.generate = timed_generate
        trainer.train()
        first, last = warmup, total - 1
        window = (timer.begin[first], timer.end[last])
        gen_s = sum(e - b for b, e in gen_calls if b >= window[0] and e <= window[1])
        step_s = (window[1] - window[0]) / ns.grpo_steps
        new_tokens = ns.prompts * ns.generations * ns.new_tokens
        result = {
            "overrides": overrides,
            "trl": {"cache_implementation": args.cache_implementation, "generation_kwargs": args.generation_kwargs,
                    "compiled_decode": compiled},
            "batch": f"{ns.prompts} prompts x {ns.generations} completions, <= {ns.new_tokens} new tokens",
            "warmup_steps": warmup,
            "timed_steps": ns.grpo_steps,
            "seconds_per_step": round(step_s, 3),
            "step_seconds": [round(e - b, 3) for b, e in zip(timer.begin, timer.end)],
            "generate_seconds_per_step": round(gen_s / ns.grpo_steps, 3),
            "generation_share": round(gen_s / (window[1] - window[0]), 3),
            "ms_per_decoding_step": round(1000 * gen_s / ns.grpo_steps / ns.new_tokens, 2),
            "generate_calls": [round(e - b, 3) for b, e in gen_calls],
            "completion_mean_length": [h.get("completions/mean_length") for h in trainer.state.log_history
                                       if "completions/mean_length" in h],
            "upper_bound_new_tokens_per_step": new_tokens,
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        }
        del trainer, model
    return result


# ---------------------------------------------------------------------------------------- main


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    env: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    for pkg in ("transformers", "trl", "liger-kernel", "triton", "accelerate", "datasets"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU smoke mode: tiny shape, short examples, few steps")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("RNER_DATA_DIR", REPO.parent / "shared" / "data")))
    p.add_argument("--work", type=Path, default=None, help="cache of tokenizer and examples (default /tmp/rner-gpu-scale[-tiny])")
    p.add_argument("--out", type=Path, default=None, help="JSON results (default bench/results/gpu_scale.json; tiny: under --work)")
    p.add_argument("--profile", default="qwen3-1.7b")
    p.add_argument("--sft", default=",".join(DEFAULT_SFT), help=f"comma-separated, of {', '.join(SFT_CONFIGS)} ('' for none)")
    p.add_argument("--grpo", default="hf_generate,static_compiled", help=f"comma-separated, of {', '.join(GRPO_CONFIGS)}")
    p.add_argument("--sft-set", dest="sft_base", action="append", default=[], help="extra key=value for every SFT run")
    p.add_argument("--grpo-set", dest="grpo_base", action="append", default=[], help="extra key=value for every GRPO run")
    p.add_argument("--steps", type=int, default=None, help="timed SFT optimizer steps (default 5; tiny 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed SFT steps first, compilation included (default 2; tiny 1)")
    p.add_argument("--grpo-steps", type=int, default=None, help="timed GRPO steps (default 2; tiny 1)")
    p.add_argument("--grpo-warmup", type=int, default=1)
    p.add_argument("--examples", type=int, default=None, help="SFT examples built (default 420; tiny 40)")
    p.add_argument("--min-tokens", type=int, default=None, help="default 1024; tiny 48")
    p.add_argument("--max-tokens", type=int, default=None, help="default 2035; tiny 96")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--grpo-micro-batch", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=None, help="GRPO completion tokens (default 256; tiny 16)")
    p.add_argument("--slot-s", type=float, default=150.0, help="most seconds one configuration may take")
    p.add_argument("--sft-budget-s", type=float, default=0.0, help="stop starting SFT configurations after this (0: none)")
    p.add_argument("--budget-s", type=float, default=0.0, help="stop starting any configuration after this (0: none)")
    ns = p.parse_args(argv)
    tiny = ns.tiny
    ns.shape = "tiny" if tiny else "qwen3-1.7b"
    ns.work = ns.work or Path("/tmp/rner-gpu-scale" + ("-tiny" if tiny else ""))
    ns.out = ns.out or (ns.work / "gpu_scale.json" if tiny else REPO / "bench" / "results" / "gpu_scale.json")
    for key, full, small in (("steps", 5, 2), ("warmup", 2, 1), ("grpo_steps", 2, 1), ("examples", 420, 40), ("min_tokens", 1024, 48),
                             ("max_tokens", 2035, 96), ("new_tokens", 256, 16)):
        if getattr(ns, key) is None:
            setattr(ns, key, small if tiny else full)
    if tiny:  # the profile's layout at a size a CPU trains in a second
        ns.sft_base = ["sft.per_device_train_batch_size=4", "sft.gradient_accumulation_steps=1", *ns.sft_base]
        ns.prompts, ns.generations, ns.grpo_micro_batch = 2, 2, 4
    ns.sft_names = [s for s in ns.sft.split(",") if s]
    ns.grpo_names = [s for s in ns.grpo.split(",") if s]
    unknown = [s for s in ns.sft_names if s not in SFT_CONFIGS] + [s for s in ns.grpo_names if s not in GRPO_CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s): {', '.join(unknown)}")
    return ns


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    if ns.tiny:  # a tiny shape gains nothing from threads and loses much to contention on a busy host
        torch.set_num_threads(1)
    try:
        return _main(ns)
    finally:
        torch.set_num_threads(threads)


def _main(ns: argparse.Namespace) -> int:
    started = time.perf_counter()
    import torch

    from reasoning_ner.config import load_config

    device = "cuda" if torch.cuda.is_available() and not ns.tiny else "cpu"
    ns.work.mkdir(parents=True, exist_ok=True)
    inputs = prepare_inputs(ns, load_config(profile=ns.profile))
    lengths = [len(r.text) for r in inputs["sft_records"]]
    results: dict[str, Any] = {
        "environment": environment(), "device": device, "shape": ns.shape, "profile": ns.profile,
        "mfu_peak_flops": PEAK_FLOPS,
        "settings": {k: getattr(ns, k) for k in ("steps", "warmup", "grpo_steps", "grpo_warmup", "examples", "min_tokens",
                                                   "max_tokens", "prompts", "generations", "new_tokens", "sft_base", "grpo_base")},
        "data": {"sft_examples": len(lengths), "sft_chars_median": sorted(lengths)[len(lengths) // 2]},
        "sft": {}, "grpo": {},
    }

    def write() -> None:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        results["seconds"] = round(time.perf_counter() - started, 1)
        ns.out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def run(kind: str, name: str, fn: Any, overrides: list[str], deadline: float) -> None:
        left = deadline - (time.perf_counter() - started) if deadline else ns.slot_s
        if left < 20:
            results[kind][name] = {"ok": False, "skipped": f"time budget used up ({left:.0f} s left)"}
        else:
            t0 = time.perf_counter()
            try:
                with time_limit(min(ns.slot_s, left) if not ns.tiny else 0):
                    results[kind][name] = {"ok": True, **fn(name, overrides, ns, inputs, device)}
            except BaseException as exc:  # noqa: BLE001 - recorded; the next configuration runs
                if isinstance(exc, KeyboardInterrupt):
                    raise
                results[kind][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                                       "traceback": traceback.format_exc()[-2500:]}
            results[kind][name]["wall_seconds"] = round(time.perf_counter() - t0, 1)
            cleanup()
        r = results[kind][name]
        brief = {k: r.get(k) for k in ("ok", "tokens_per_second", "mfu", "peak_allocated_gib", "seconds_per_step",
                                       "generation_share", "wall_seconds", "error", "skipped") if r.get(k) is not None}
        print(f"[{kind}] {name}: {json.dumps(brief)}", flush=True)
        write()

    sft_deadline = ns.sft_budget_s or ns.budget_s
    for name in ns.sft_names:
        run("sft", name, run_sft, SFT_CONFIGS[name], sft_deadline)
    for name in ns.grpo_names:
        run("grpo", name, run_grpo, GRPO_CONFIGS[name], ns.budget_s)
    write()
    print(table(results), flush=True)
    return 0 if all(r.get("ok") for part in ("sft", "grpo") for r in results[part].values()) else 1


def table(results: dict[str, Any]) -> str:
    rows = ["| SFT configuration | tokens/s | MFU | peak GiB | s/step | matmul / attention / elementwise / other | busy |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results["sft"].items():
        if not r.get("ok"):
            rows.append(f"| {name} | failed: {(r.get('error') or r.get('skipped') or '')[:80]} |")
            continue
        k = r.get("kernels", {})
        share = " / ".join(f"{100 * k.get('share', {}).get(g, 0):.0f}%" for g in ("matmul", "attention", "elementwise", "other"))
        rows.append(f"| {name} | {r['tokens_per_second']:,.0f} | {100 * r['mfu']:.1f}% | {r['peak_allocated_gib']} | "
                    f"{r['seconds_per_step']} | {share} | {k.get('busy_share')} |")
    rows += ["", "| GRPO configuration | s/step | generate s/step | generation share | ms per decoding step |", "|---|---|---|---|---|"]
    for name, r in results["grpo"].items():
        if not r.get("ok"):
            rows.append(f"| {name} | failed: {(r.get('error') or r.get('skipped') or '')[:80]} |")
            continue
        rows.append(f"| {name} | {r['seconds_per_step']} | {r['generate_seconds_per_step']} | "
                    f"{100 * r['generation_share']:.0f}% | {r['ms_per_decoding_step']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
