"""Seeded measurements for Stage 2 (SFT) on the tiny-cpu profile.

    .venv/bin/python bench/sft_learning.py speed  [--steps 12 --rounds 2]
    .venv/bin/python bench/sft_learning.py learn  [--seeds 0 1 2]
    .venv/bin/python bench/sft_learning.py all

``speed``: optimizer steps per second of :class:`CompletionOnlySFTTrainer` against trl's stock
``SFTTrainer`` on the same model, data (CoT records short enough that neither truncates) and
batch. Runs alternate (stock, ours, stock, ours, ...) so that load from other processes on a
shared machine hits both alike; the ratio is of the medians. Also checks that the two losses on
the first batch agree.

``learn``: for each seed, the tiny model is built with that init seed (same tokenizer), trained
with that training seed on the :data:`RECIPE` data, and the untrained and trained models are
scored on a fixed seeded sample of CoNLL-2003 test sentences (greedy, batched): parse rate and
paper-parity F1. Every seed is reported; the gates in tests/test_sft.py are set from these
numbers (no seed picking: the test runs seed 0, one of the measured ones).

Results go to ``--out`` (default bench/results/sft_learning.json) and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The learning-check recipe: the tiny-cpu profile exactly as `make run` trains it (its defaults,
#: the offline-teacher CoT data the pipeline's synthesis step builds), plus the held-out sample.
#: tests/conftest.py's ``sft_model`` fixture trains it with seed 0 (one of the measured seeds).
RECIPE: dict[str, Any] = {
    "profile": "tiny-cpu",
    "overrides": ["sft.save_steps=0"],
    "eval_dataset": "conll2003",
    "eval_split": "test",
    "eval_n": 200,
    "eval_sample_seed": 0,
    "max_new_tokens": 128,
}


def offline_cot_records(prepared_dir: Path, counts: dict[str, int], seed: int, style: str = "compact") -> list[Any]:
    """A seeded sample of train-split records per dataset, each with an offline-teacher chain (speed bench)."""
    from reasoning_ner.cot.offline import offline_chain
    from reasoning_ner.records import read_records

    out = []
    for name, n in counts.items():
        recs = read_records(Path(prepared_dir) / name / "train.jsonl")
        rng = random.Random(f"{seed}-{name}")
        for rec in rng.sample(recs, min(n, len(recs))):
            rec.cot = offline_chain(rec, style)
            rec.meta = {**rec.meta, "teacher": "offline-gold-v1", "chain_style": style}
            out.append(rec)
    return out


def pipeline_cot(prepared_dir: Path, out_dir: Path, cfg: Any) -> Path:
    """The CoT file the pipeline's synthesis step builds for ``cfg`` (offline teacher over
    ``data.train_datasets``, evaluation sentences dropped, ``cot.max_records_per_dataset`` cap)."""
    from reasoning_ner.cot.synthesize import synthesize
    from reasoning_ner.validation import find_eval_files

    inputs = [Path(prepared_dir) / name / "train.jsonl" for name in cfg.data.train_datasets]
    synthesize(inputs, out_dir, cfg.cot, cfg.data.zero_shot_datasets, False, find_eval_files(prepared_dir))
    return out_dir / "accepted.jsonl"


def train_recipe(prepared_dir: Path, work: Path, seed: int, recipe: dict[str, Any] = RECIPE, tag: str = "") -> dict[str, Any]:
    """Build the tiny base model (init seed ``seed``), train SFT on the pipeline's CoT data with
    training seed ``seed``, and score the untrained and trained models on the held-out sample."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasoning_ner.config import load_config
    from reasoning_ner.modeling import init_tiny
    from reasoning_ner.training.generate import generate_and_score
    from reasoning_ner.training.sft import train_sft

    cfg = load_config(profile=recipe["profile"], overrides=[*recipe["overrides"], f"seed={seed}", f"model.tiny.seed={seed}"])
    base_dir = work / f"tiny{tag}-seed{seed}"  # a tagged run may override the model itself
    if not (base_dir / "config.json").is_file():
        init_tiny(base_dir, cfg.model.tiny, data_dir=prepared_dir, prompt_cfg=cfg.prompt)
    train_file = pipeline_cot(prepared_dir, work / f"cot-seed{seed}", cfg)
    evals = eval_sample(prepared_dir, recipe)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    untrained, _ = generate_and_score(AutoModelForCausalLM.from_pretrained(base_dir), tokenizer, evals, cfg.prompt,
                                      recipe["max_new_tokens"])
    started = time.perf_counter()
    summary = train_sft(cfg, [train_file], work / f"sft{tag}-seed{seed}", base_model=str(base_dir), resume=False,
                        progress=False, lineage={"recipe": "bench/sft_learning.py RECIPE", "seed": seed})
    seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    trained, generations = generate_and_score(AutoModelForCausalLM.from_pretrained(summary["model_dir"]), tokenizer, evals,
                                              cfg.prompt, recipe["max_new_tokens"])
    return {"cfg": cfg, "base_dir": base_dir, "model_dir": Path(summary["model_dir"]), "output_dir": work / f"sft{tag}-seed{seed}",
            "train_file": train_file, "eval_records": evals, "summary": summary, "untrained": untrained, "trained": trained,
            "generations": generations, "seconds": seconds, "eval_generation_seconds": time.perf_counter() - t0}


def eval_sample(prepared_dir: Path, recipe: dict[str, Any] = RECIPE) -> list[Any]:
    from reasoning_ner.records import read_records

    recs = read_records(Path(prepared_dir) / recipe["eval_dataset"] / f"{recipe['eval_split']}.jsonl")
    return random.Random(recipe["eval_sample_seed"]).sample(recs, recipe["eval_n"])


def prepare(data_source: Path, work: Path) -> Path:
    from reasoning_ner.data.prepare import prepare as prepare_data

    prepared = work / "data"
    if not (prepared / "conll2003" / "train.jsonl").is_file():
        prepare_data("conll2003,pile_ner", data_source, prepared, progress=False)
    return prepared


def build_tiny(prepared: Path, out: Path, seed: int) -> Path:
    from reasoning_ner.config import load_config
    from reasoning_ner.modeling import init_tiny

    cfg = load_config(profile=RECIPE["profile"], overrides=[f"model.tiny.seed={seed}"])
    if not (out / "config.json").is_file():
        init_tiny(out, cfg.model.tiny, data_dir=prepared, prompt_cfg=cfg.prompt)
    return out


def load_info() -> dict[str, Any]:
    import torch

    return {
        "load_avg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


# ------------------------------------------------------------------------------------ speed


def run_speed(prepared: Path, work: Path, steps: int, rounds: int) -> dict[str, Any]:
    import torch
    from trl import SFTTrainer

    from reasoning_ner.config import load_config
    from reasoning_ner.records import write_jsonl
    from reasoning_ner.training.sft import (
        CompletionOnlySFTTrainer,
        build_sft_args,
        build_trainer,
        load_for_training,
        load_sft_records,
        resolve_runtime,
    )
    from reasoning_ner.training.runtime import cpu_has_amx

    tiny = build_tiny(prepared, work / "tiny-seed0", 0)
    cfg = load_config(
        profile=RECIPE["profile"],
        overrides=[f"sft.max_steps={steps}", "sft.save_steps=0", f"sft.logging_steps={steps}", "sft.warmup_ratio=0"],
    )
    records = offline_cot_records(prepared, {"conll2003": 14000, "pile_ner": 100}, seed=0)
    data = work / "speed.jsonl"
    write_jsonl(data, records)
    records = load_sft_records([data], cfg)
    runtime = resolve_runtime(cfg.sft)
    _, tok = load_for_training(str(tiny), cfg, runtime)
    # Keep only examples that fit max_length, so the stock trainer (no truncation) sees the same data.
    from reasoning_ner.training.sft import sft_example

    def n_tokens(r: Any) -> int:
        ex = sft_example(r, cfg)
        return len(tok(ex["prompt"] + ex["completion"])["input_ids"])

    # Exactly one epoch of `steps` batches, a seeded sample of the recipe's mix: every variant
    # processes the same examples, only the batching differs.
    fitting = [r for r in records if n_tokens(r) <= cfg.sft.max_length]
    records = random.Random(0).sample(fitting, steps * cfg.sft.per_device_train_batch_size)

    # bf16 autocast with float32 attention (sft.cpu_bf16), forced on to measure it on any CPU.
    bf16_cfg = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"cpu_bf16": True})})
    bf16_runtime = resolve_runtime(bf16_cfg.sft)
    variants = [  # (name, trainer class, length-grouped batches, config, runtime)
        ("stock", SFTTrainer, False, cfg, runtime),
        ("ours", CompletionOnlySFTTrainer, False, cfg, runtime),
        ("ours_grouped", CompletionOnlySFTTrainer, True, cfg, runtime),
        ("ours_grouped_cpu_bf16", CompletionOnlySFTTrainer, True, bf16_cfg, bf16_runtime),
    ]
    timings: dict[str, list[float]] = {name: [] for name, *_ in variants}
    first_loss: dict[str, float] = {}
    for rnd in range(rounds):
        for name, cls, grouped, vcfg, vruntime in variants:
            model, tok = load_for_training(str(tiny), vcfg, vruntime)
            args = build_sft_args(vcfg, work / f"speed-{name}", vruntime, progress=False)
            args.train_sampling_strategy = "group_by_length" if grouped else "random"
            trainer = build_trainer(
                vcfg, records, model, tok, work / f"speed-{name}", runtime=vruntime, args=args, trainer_cls=cls, progress=False
            )
            if rnd == 0 and not grouped:  # loss of the same first batch, before any update
                batch = next(iter(trainer.get_train_dataloader()))
                trainer.model.train()
                with torch.no_grad():
                    first_loss[name] = float(trainer.compute_loss(trainer.model, dict(batch)))
            out = trainer.train()
            sps = steps / out.metrics["train_runtime"]
            timings[name].append(sps)
            print(f"round {rnd} {name:12s}: {sps:.3f} steps/s", flush=True)
    med = {name: statistics.median(v) for name, v in timings.items()}
    return {
        "steps_per_run": steps,
        "rounds": rounds,
        "batch_size": cfg.sft.per_device_train_batch_size,
        "examples": len(records),
        "steps_per_second": timings,
        "median_steps_per_second": med,
        "speedup_loss_path": med["ours"] / med["stock"],
        "speedup_with_length_grouping": med["ours_grouped"] / med["stock"],
        "speedup_cpu_bf16_over_grouped": med["ours_grouped_cpu_bf16"] / med["ours_grouped"],
        "amx": cpu_has_amx(),
        "first_batch_loss": first_loss,
        "machine": load_info(),
    }


# ------------------------------------------------------------------------------------ learn


def run_learn(
    prepared: Path, work: Path, seeds: list[int], recipe: dict[str, Any] = RECIPE, tag: str = ""
) -> dict[str, Any]:
    results = []
    for seed in seeds:
        run = train_recipe(prepared, work, seed, recipe, tag)
        summary, trained, untrained = run["summary"], run["trained"], run["untrained"]
        row = {
            "seed": seed,
            "steps": summary["steps"],
            "train_examples": summary["examples"],
            "train_seconds": summary["train_seconds"],
            "total_seconds": round(run["seconds"], 1),
            "loss_first": summary["train_loss_first"],
            "loss_last": summary["train_loss_last"],
            "untrained_parse_rate": untrained["parse_rate"],
            "untrained_f1": untrained["f1"],
            "parse_rate": trained["parse_rate"],
            "f1": trained["f1"],
            "precision": trained["precision"],
            "recall": trained["recall"],
            "per_label_f1": trained["per_label_f1"],
            "eval_generation_seconds": round(run["eval_generation_seconds"], 1),
            "example_generations": run["generations"][:3],
            "machine": load_info(),
        }
        print(json.dumps({k: v for k, v in row.items() if k != "example_generations"}), flush=True)
        results.append(row)
    keys = ["loss_first", "loss_last", "parse_rate", "f1", "untrained_parse_rate", "untrained_f1", "train_seconds"]
    agg = {
        k: {"min": min(r[k] for r in results), "max": max(r[k] for r in results), "mean": statistics.mean(r[k] for r in results)}
        for k in keys
    }
    return {"recipe": recipe, "seeds": results, "aggregate": agg}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["speed", "learn", "all"])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RNER_DATA_DIR", REPO.parent / "shared" / "data")))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sft_learning.json")
    parser.add_argument("--override", action="append", default=[], help="explore: extra config override (not RECIPE)")
    parser.add_argument("--tag", default="", help="explore: name suffix of the run folders")
    ns = parser.parse_args(argv)
    work = ns.work or Path(tempfile.mkdtemp(prefix="sft-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    prepared = prepare(ns.data, work)
    results: dict[str, Any] = {}
    if ns.out.is_file():
        results = json.loads(ns.out.read_text())
    if ns.what in ("speed", "all"):
        results["speed"] = run_speed(prepared, work, ns.steps, ns.rounds)
        print(json.dumps(results["speed"], indent=2))
    if ns.what in ("learn", "all"):
        recipe = {**RECIPE, "overrides": [*RECIPE["overrides"], *ns.override]}
        results["learn"] = run_learn(prepared, work, ns.seeds, recipe, ns.tag)
        print(json.dumps(results["learn"]["aggregate"], indent=2))
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
