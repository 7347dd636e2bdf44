"""Two torch processes on two cores: how OpenMP's wait policy decides whether they share or stall.

The test suite overlaps torch processes (the session's SFT model trains in the background while
other tests train, serve and evaluate models; tests/conftest.py). With the OpenMP default, a thread
that reaches a barrier spins before it sleeps, so two 2-thread processes on 2 cores burn each
other's time slices; ``OMP_WAIT_POLICY=PASSIVE`` makes them sleep at once. This bench times one
training step of the tiny-cpu model (its architecture from the profile, batch 32 x 96 tokens,
AdamW), per policy:

* ``alone``: one process;
* ``pair``: two identical processes at once; reported per process;
* ``niced``: the same, the second at nice 19 (the suite's case: its SFT model trains in the
  background at nice 19, tests/sft_background.py); reported for the first, the foreground one, and
  as the makespan (seconds until both are done, start-up included: the work the pair gets through).

Usage::

    .venv/bin/python bench/omp_contention.py [--steps 12]

Writes ``bench/results/omp_contention.json`` and prints the table recorded in docs/pipeline.md.
Run it on an otherwise idle machine: the ratios are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "omp_contention.json"
POLICIES = ("default", "PASSIVE")
BATCH, SEQ = 32, 96


def worker(steps: int) -> None:
    """Time ``steps`` training steps of the tiny-cpu model (after one warm-up step); print s/step."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from reasoning_ner.config import resolve_config

    tiny = resolve_config(profile="tiny-cpu").model.tiny
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=tiny.vocab_size, hidden_size=tiny.hidden_size, intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_hidden_layers, num_attention_heads=tiny.num_attention_heads,
        num_key_value_heads=tiny.num_key_value_heads, tie_word_embeddings=tiny.tie_word_embeddings))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, tiny.vocab_size, (BATCH, SEQ))

    def step() -> None:
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    print(json.dumps({"s_per_step": (time.perf_counter() - started) / steps, "threads": torch.get_num_threads()}))


def run(policy: str, copies: int, steps: int, nice_second: bool = False) -> list[float]:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(steps)], env=env, stdout=subprocess.PIPE,
                              text=True, preexec_fn=(lambda: os.nice(19)) if nice_second and i else None)
             for i in range(copies)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1])["s_per_step"] for p in procs]


def makespan(policy: str, steps: int) -> float:
    """Seconds until both processes of a niced pair are done: the work the pair gets through."""
    started = time.perf_counter()
    run(policy, 2, steps, nice_second=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.worker:
        worker(ns.worker)
        return
    rows = {}
    for policy in POLICIES:
        alone = run(policy, 1, ns.steps)[0]
        pair = run(policy, 2, ns.steps)
        niced = run(policy, 2, ns.steps, nice_second=True)[0]
        span = makespan(policy, ns.steps)
        rows[policy] = {"alone_s_per_step": round(alone, 3), "pair_s_per_step": [round(x, 3) for x in pair],
                        "pair_slowdown": round(max(pair) / alone, 2), "niced_pair_foreground_s_per_step": round(niced, 3),
                        "niced_pair_slowdown": round(niced / alone, 2), "niced_pair_makespan_s": round(span, 1)}
        print(policy, rows[policy], flush=True)
    result = {
        "what": f"tiny-cpu model training step (batch {BATCH} x {SEQ}), one process vs two at once",
        "steps": ns.steps, "cpus": os.cpu_count(), "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "policies": rows,
        "pair_default_over_passive": round(max(rows["default"]["pair_s_per_step"]) / max(rows["PASSIVE"]["pair_s_per_step"]), 2),
        "alone_passive_over_default": round(rows["PASSIVE"]["alone_s_per_step"] / rows["default"]["alone_s_per_step"], 2),
        "niced_default_over_passive": round(rows["default"]["niced_pair_foreground_s_per_step"]
                                            / rows["PASSIVE"]["niced_pair_foreground_s_per_step"], 2),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("| policy | alone s/step | two at once s/step (each) | slowdown | foreground beside a nice-19 one | slowdown | both done (s) |\n"
          "|---|---|---|---|---|---|---|")
    for policy, r in rows.items():
        print(f"| {policy} | {r['alone_s_per_step']} | {' / '.join(map(str, r['pair_s_per_step']))} | {r['pair_slowdown']}x "
              f"| {r['niced_pair_foreground_s_per_step']} | {r['niced_pair_slowdown']}x | {r['niced_pair_makespan_s']} |")


if __name__ == "__main__":
    main()
