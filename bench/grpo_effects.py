"""Does GRPO move what its reward asks for? Held-out prompts, against the SFT checkpoint it started from.

Two experiments, each run for every seed (default 0 1 2; no seed is dropped) with the tiny-cpu
profile, from one SFT checkpoint trained by :func:`train_recipe_sft` (the same recipe as the test
suite's ``sft_model_dir`` fixture):

* ``f1_schema``: the paper's reward, 10 x F1 + 1 x schema.
* ``length``: the same plus the length-aware term (weight :data:`LENGTH_WEIGHT`) with
  ``think_token_budget`` = the SFT model's median greedy thinking length on the held-out prompts
  minus :data:`BUDGET_BELOW_MEDIAN` (so the budget is below its typical thinking length by
  construction).

Held-out prompts: :data:`HELDOUT_N` CoNLL-2003 *dev* sentences (fixed sample, seed
:data:`HELDOUT_SEED`; RL trains on the train split; settings are tuned on these only). The F1 effect is
also reported on a fixed sample of :data:`TEST_N` CoNLL-2003 *test* sentences (seed :data:`TEST_SEED`;
``--test-n 0``: the whole split, where a seed's spread is smaller). Before = the SFT checkpoint, after = each
GRPO policy, both decoded greedily and scored with the reward terms
(:func:`reasoning_ner.training.grpo.evaluate_policy`).

Usage::

    .venv/bin/python bench/grpo_effects.py --data work/data [--sft DIR] [--seeds 0 1 2]

``--data`` is a prepared folder with ``conll2003/{train,dev}.jsonl``. Without ``--sft`` the SFT
checkpoint is trained first (into ``--work``). Writes ``bench/results/grpo_effects.json`` and
prints the markdown table recorded in docs/grpo.md. tests/test_grpo.py imports the constants
and functions below, so the tests run exactly what was measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from reasoning_ner.config import Config, load_config  # noqa: E402
from reasoning_ner.records import NERRecord, read_records  # noqa: E402
from reasoning_ner.rewards import length_penalty  # noqa: E402

#: Seed of the SFT checkpoint GRPO starts from (the SFT test fixture's seed).
SFT_SEED = 0
HELDOUT_N = 100
HELDOUT_SEED = 1234
#: The fixed test sample the effect is reported on (levers are tuned on the dev prompts above only).
TEST_N = 300
TEST_SEED = 0
#: Both experiments run the tiny-cpu profile's GRPO settings (config/) unchanged; ``--set`` adds
#: overrides when exploring (recorded in the results).
GRPO_OVERRIDES: list[str] = []
LENGTH_WEIGHT = 8.0
#: The length experiment also rewards the format (one closed <think> block first): measured without
#: it, a seed learned to drop the block altogether to dodge the length penalty.
FORMAT_WEIGHT = 1.0
BUDGET_BELOW_MEDIAN = 1
EXPERIMENTS = ("f1_schema", "length")


def _sft_bench() -> Any:
    """bench/sft_learning.py, whose RECIPE is the SFT test fixture's (tests/test_sft.py)."""
    import importlib.util

    path = Path(__file__).resolve().with_name("sft_learning.py")
    spec = importlib.util.spec_from_file_location("sft_learning", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_recipe_sft(prepared_dir: Path, work: Path, seed: int = SFT_SEED) -> Path:
    """The SFT checkpoint GRPO starts from: bench/sft_learning.py's recipe (the tiny-cpu profile as
    `make run` trains it), the same run as tests/conftest.py's ``sft_model`` fixture. Returns the model directory."""
    return _sft_bench().train_recipe(prepared_dir, work, seed)["model_dir"]


def heldout_records(prepared_dir: Path, n: int = HELDOUT_N) -> list[NERRecord]:
    records = read_records(prepared_dir / "conll2003" / "dev.jsonl")
    return random.Random(HELDOUT_SEED).sample(records, n)


def conll_test_sample(prepared_dir: Path, n: int = TEST_N) -> list[NERRecord]:
    """A fixed, seeded sample of CoNLL-2003 *test* sentences: where the F1 effect is reported
    (``n`` = 0: the whole split, 3,453 sentences, ~75 s of greedy decoding per model on 2 cores)."""
    records = read_records(prepared_dir / "conll2003" / "test.jsonl")
    return records if n == 0 else random.Random(TEST_SEED).sample(records, n)


def test_scores(model_dir: Path, records: list[NERRecord]) -> dict[str, float]:
    """Paper-parity micro F1 and parse rate of the greedy answers on the test sample."""
    scores = evaluate(model_dir, records)
    return {"n": len(records), "micro_f1": scores["micro_f1"], "parse_rate": scores["parse_rate"]}


def experiment_config(name: str, seed: int, budget: int) -> Config:
    overrides = [*GRPO_OVERRIDES, f"seed={seed}"]
    if name == "length":
        overrides += [f"grpo.reward_length_weight={LENGTH_WEIGHT}", f"grpo.think_token_budget={budget}",
                      f"grpo.reward_format_weight={FORMAT_WEIGHT}"]
    elif name != "f1_schema":
        raise ValueError(f"unknown experiment {name!r}")
    return load_config(profile="tiny-cpu", overrides=overrides)


def evaluate(model_dir: Path, records: list[NERRecord], budget: int | None = None) -> dict[str, Any]:
    """Greedy generations on the held-out records, scored with the *paper* reward (10 x F1 + 1 x
    schema, whatever the run trained with) and, separately, the length term for ``budget``."""
    from reasoning_ner.modeling import load_model_and_tokenizer
    from reasoning_ner.training.grpo import evaluate_policy

    model, tokenizer = load_model_and_tokenizer(str(model_dir))
    return evaluate_policy(model, tokenizer, records, load_config(profile="tiny-cpu"), budget=budget)


def budget_for(think_tokens_per_sample: list[int]) -> int:
    """The length experiment's budget: BUDGET_BELOW_MEDIAN tokens below the SFT model's median
    greedy thinking length on the held-out prompts (so below its typical length by construction)."""
    return max(1, int(statistics.median(think_tokens_per_sample)) - BUDGET_BELOW_MEDIAN)


def baseline(sft_dir: Path, records: list[NERRecord]) -> tuple[dict[str, Any], int]:
    """The SFT checkpoint on the held-out records, the length budget derived from it, and the
    length term (and over-budget rate) it would get under that budget."""
    before = evaluate(sft_dir, records)
    per_sample = before.pop("think_tokens_per_sample")
    budget = budget_for(per_sample)
    before["length_term"] = statistics.mean(length_penalty(n, budget) for n in per_sample)
    before["think_token_budget"] = budget
    before["over_budget_rate"] = sum(n > budget for n in per_sample) / len(per_sample)
    return before, budget


def run_experiment(name: str, seed: int, sft_dir: Path, prepared_dir: Path, records: list[NERRecord],
                   before: dict[str, Any], work: Path, test_records: list[NERRecord] | None = None) -> dict[str, Any]:
    from reasoning_ner.training.grpo import train_grpo

    budget = before["think_token_budget"]
    cfg = experiment_config(name, seed, budget)
    out = work / f"grpo-{name}-seed{seed}"
    started = time.perf_counter()
    summary = train_grpo(cfg, sft_dir, [prepared_dir / "conll2003" / "train.jsonl"], out, resume=False)
    seconds = time.perf_counter() - started
    after = evaluate(Path(summary["model_dir"]), records, budget)
    per_sample = after.pop("think_tokens_per_sample")
    after["over_budget_rate"] = sum(n > budget for n in per_sample) / len(per_sample)
    run = {"experiment": name, "seed": seed, "budget": budget, "steps": summary["global_steps"],
           "train_seconds": summary["train_seconds"], "total_seconds": round(seconds, 1), "after": after}
    if test_records:
        run["after_test"] = test_scores(Path(summary["model_dir"]), test_records)
    return run


def markdown(before: dict[str, Any], runs: list[dict[str, Any]], before_test: dict[str, Any] | None = None) -> str:
    cols = ["parse_rate", "schema_valid_rate", "micro_f1", "f1_reward", "reward", "think_tokens", "over_budget_rate", "length_term"]
    head = "| run | seed | " + " | ".join(cols) + " | test F1 (parse) | steps | train s |\n|" + "---|" * (len(cols) + 5)

    def test(scores: dict[str, Any] | None) -> str:
        return f"{scores['micro_f1']:.3f} ({scores['parse_rate']:.2f})" if scores else "-"

    lines = [head, "| SFT (before) | - | " + " | ".join(f"{before[c]:.3f}" for c in cols) + f" | {test(before_test)} | - | - |"]
    for r in runs:
        a = r["after"]
        lines.append(f"| {r['experiment']} | {r['seed']} | " + " | ".join(f"{a[c]:.3f}" for c in cols)
                     + f" | {test(r.get('after_test'))} | {r['steps']} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def summarize(sft_dir: Path, records_n: int, before: dict[str, Any], runs: list[dict[str, Any]],
              before_test: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result document: settings, before, every run, and min/mean/max of after - before."""
    deltas: dict[str, Any] = {}
    for name in EXPERIMENTS:
        rs = [r for r in runs if r["experiment"] == name]
        if not rs:
            continue
        for key in ("reward", "schema_valid_rate", "parse_rate", "micro_f1", "think_tokens", "over_budget_rate", "length_term"):
            d = [r["after"][key] - before[key] for r in rs]
            deltas[f"{name}/{key}"] = {"min": min(d), "mean": statistics.mean(d), "max": max(d)}
        if before_test and all("after_test" in r for r in rs):
            for key in ("micro_f1", "parse_rate"):
                d = [r["after_test"][key] - before_test[key] for r in rs]
                deltas[f"{name}/test_{key}"] = {"min": min(d), "mean": statistics.mean(d), "max": max(d)}
    return {
        "sft_model_dir": str(sft_dir),
        "heldout": {"dataset": "conll2003", "split": "dev", "n": records_n, "seed": HELDOUT_SEED},
        "test": {"dataset": "conll2003", "split": "test", "n": (before_test or {}).get("n", TEST_N), "seed": TEST_SEED,
                 "before": before_test},
        "settings": {
            "sft_recipe": _sft_bench().RECIPE, "sft_seed": SFT_SEED, "grpo_overrides": GRPO_OVERRIDES,
            "length_weight": LENGTH_WEIGHT, "format_weight": FORMAT_WEIGHT, "budget_below_median": BUDGET_BELOW_MEDIAN,
            "budget": before["think_token_budget"],
            "grpo": experiment_config("f1_schema", 0, before["think_token_budget"]).grpo.model_dump(),
        },
        "before": before,
        "runs": sorted(runs, key=lambda r: (EXPERIMENTS.index(r["experiment"]), r["seed"])),
        "deltas_after_minus_before": deltas,
        "machine": {"cpus": os.cpu_count(), "load_avg_end": os.getloadavg()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder (conll2003 train/dev)")
    parser.add_argument("--sft", type=Path, default=None, help="SFT model dir (default: train one with the recipe)")
    parser.add_argument("--work", type=Path, default=Path("work/bench-grpo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/grpo_effects.json"))
    parser.add_argument("--test-n", type=int, default=TEST_N,
                        help="CoNLL-2003 test sentences the F1 effect is reported on (0 = all 3,453)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra config override for exploration (the recorded results use none)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="combine result files of runs split over processes (same SFT) into --out")
    ns = parser.parse_args(argv)
    GRPO_OVERRIDES.extend(ns.overrides)

    if ns.merge:
        parts = [json.loads(p.read_text()) for p in ns.merge]
        if len({json.dumps(p["before"], sort_keys=True) for p in parts}) != 1:
            raise SystemExit("the files to merge have different SFT baselines")
        runs = [r for p in parts for r in p["runs"]]
        result = summarize(Path(parts[0]["sft_model_dir"]), parts[0]["heldout"]["n"], parts[0]["before"], runs,
                           (parts[0].get("test") or {}).get("before"))
    else:
        ns.work.mkdir(parents=True, exist_ok=True)
        sft_dir = ns.sft or train_recipe_sft(ns.data, ns.work)
        records = heldout_records(ns.data)
        before, budget = baseline(sft_dir, records)
        tests = conll_test_sample(ns.data, ns.test_n)
        before_test = test_scores(Path(sft_dir), tests)
        print(f"SFT before: {json.dumps(before)}; length budget {budget}; test {json.dumps(before_test)}", flush=True)
        runs = []
        for name in ns.experiments:
            for seed in ns.seeds:
                run = run_experiment(name, seed, sft_dir, ns.data, records, before, ns.work, tests)
                print(json.dumps(run), flush=True)
                runs.append(run)
        result = summarize(sft_dir, len(records), before, runs, before_test)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result["before"], result["runs"], result["test"]["before"]))
    print(json.dumps(result["deltas_after_minus_before"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
