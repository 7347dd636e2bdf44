"""Serving benchmarks (issue 7). Every server binds 127.0.0.1; every load is bounded.

(a) ``proxy``: the service in front of a stub OpenAI backend with a fixed latency L, at concurrency
    C = 64. Bound = C / L requests/s. Reports the service's throughput against the bound (target
    >= 0.9) and its added p50 latency over calling the stub directly (target <= 5 ms), at
    concurrency 64 and 1.
(b) ``batching``: dynamic batching (max_batch_size 32) versus one-by-one generation
    (max_batch_size 1) on the tiny CPU model under concurrent HTTP load (target >= 4x).
(c) ``budget``: F1 against the reasoning cap on a dev-set sample, in process (the service's own
    generate_ner + build_prediction), plotted as F1 vs. thinking tokens (PNG).

Usage::

    .venv/bin/python bench/serving.py all --model work/models/tiny-base --data work/data
    .venv/bin/python bench/serving.py budget --model work/models/grpo --data work/data --n 100

Writes bench/results/serving.json (one key per part, merged with earlier runs) and
bench/results/serving_f1_vs_budget.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAME = "reasoning-ner"
TEXTS = ["Ada Lovelace met Alan Turing in London.", "EU rejects German call to boycott British lamb .", "Peter Blackburn",
         "BRUSSELS 1996-08-22", "Japan began the defence of their Asian Cup title with a lucky 2-1 win against Syria ."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m_at_start": round(load[0], 2), "python": sys.version.split()[0]}


# ------------------------------------------------------------------------------------ stub backend


def run_stub(port: int, latency_ms: float) -> None:
    """A stub OpenAI-compatible backend: fixed latency, a fixed valid NER answer (vLLM-shaped)."""
    from aiohttp import web

    delay = latency_ms / 1000
    answer = json.dumps({"entities": {"person": ["Ada Lovelace", "Alan Turing"], "location": ["London"]}})

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(delay)
        return web.json_response({"id": "c", "object": "chat.completion", "created": 1, "model": body.get("model", "stub"),
                                  "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                      "role": "assistant", "content": answer, "reasoning_content": "Names are people."}}],
                                  "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50}})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ------------------------------------------------------------------------------------ processes


class Proc:
    def __init__(self, cmd: list[str], ready_url: str, log: Path, timeout: float = 180):
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited {self.proc.returncode}; see {log}")
            try:
                import urllib.request

                with urllib.request.urlopen(ready_url, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{ready_url} not ready in {timeout} s; see {log}")
            time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def start_service(model: str | None, sets: dict, logdir: Path, tag: str) -> tuple[Proc, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "reasoning_ner.serving.server", "--port", str(port), "--no-access-log"]
    if model:
        cmd += ["--model", model]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    base = f"http://127.0.0.1:{port}"
    return Proc(cmd, f"{base}/v2/health/ready", logdir / f"service-{tag}.log"), base


# ------------------------------------------------------------------------------------ load


async def load(url: str, bodies: list[dict], concurrency: int) -> dict:
    """POST every body, at most ``concurrency`` in flight; statuses, latencies, wall time."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = list(reversed(bodies))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {"requests": len(bodies), "statuses": statuses, "wall_s": round(wall, 3), "rps": round(len(bodies) / wall, 2),
            "p50_ms": round(q[49] * 1000, 2), "p95_ms": round(q[94] * 1000, 2)}


def predict_bodies(n: int) -> list[dict]:
    return [{"instances": [{"text": TEXTS[i % len(TEXTS)], "labels": ["person", "location"]}]} for i in range(n)]


# ------------------------------------------------------------------------------------ (a)


def cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def bench_proxy_at(latency_ms: float, args: argparse.Namespace, logdir: Path) -> dict:
    latency_s, conc = latency_ms / 1000, 64
    bound = conc / latency_s
    n = int(bound * args.seconds)
    port = free_port()
    stub = Proc([sys.executable, str(Path(__file__).resolve()), "stub", "--port", str(port), "--latency-ms", str(latency_ms)],
                f"http://127.0.0.1:{port}/v1/models", logdir / "stub.log")
    try:
        direct_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        chat = {"model": "stub", "messages": [{"role": "user", "content": "x"}], "max_tokens": 64}
        asyncio.run(load(direct_url, [chat] * conc, conc))
        direct = asyncio.run(load(direct_url, [chat] * n, conc))
        direct1 = asyncio.run(load(direct_url, [chat] * args.c1_requests, 1))
        svc, base = start_service(None, {"backend": "remote", "remote_url": f"http://127.0.0.1:{port}/v1", "remote_model": "stub",
                                         "prompt_style": "compact"}, logdir, "proxy")
        try:
            url = f"{base}/v1/models/{NAME}:predict"
            asyncio.run(load(url, predict_bodies(2 * conc), conc))  # warm-up
            cpu0 = cpu_seconds(svc.proc.pid)
            service = asyncio.run(load(url, predict_bodies(n), conc))
            cpu_ms = 1000 * (cpu_seconds(svc.proc.pid) - cpu0) / n
            service1 = asyncio.run(load(url, predict_bodies(args.c1_requests), 1))
        finally:
            svc.stop()
    finally:
        stub.stop()
    return {
        "latency_ms": latency_ms, "concurrency": conc, "bound_rps": round(bound, 1),
        "direct": direct, "service": service, "direct_c1": direct1, "service_c1": service1,
        "service_ratio_to_bound": round(service["rps"] / bound, 3),
        "direct_ratio_to_bound": round(direct["rps"] / bound, 3),
        "service_cpu_ms_per_request": round(cpu_ms, 2),
        "added_p50_ms_c64": round(service["p50_ms"] - direct["p50_ms"], 2),
        "added_p50_ms_c1": round(service1["p50_ms"] - direct1["p50_ms"], 2),
    }


def bench_proxy(args: argparse.Namespace, logdir: Path) -> dict:
    runs = [bench_proxy_at(float(ms), args, logdir) for ms in args.latency_ms.split(",")]
    return {"runs": runs}


# ------------------------------------------------------------------------------------ (b)


def bench_batching(args: argparse.Namespace, logdir: Path) -> dict:
    common = {"max_new_tokens": args.max_new_tokens, "torch_threads": args.torch_threads, "prompt_style": args.prompt_style}
    out: dict = {"model": args.model, "max_new_tokens": args.max_new_tokens, "torch_threads": args.torch_threads, "concurrency": 64}
    for tag, sets, n in (("batched", {"max_batch_size": 32, "max_batch_wait_ms": 5}, args.batched_requests),
                         ("one_by_one", {"max_batch_size": 1, "max_batch_wait_ms": 0}, args.single_requests)):
        svc, base = start_service(args.model, {**common, **sets}, logdir, tag)
        try:
            url = f"{base}/v1/models/{NAME}:predict"
            asyncio.run(load(url, predict_bodies(64), 64))  # warm-up
            out[tag] = asyncio.run(load(url, predict_bodies(n), 64))
        finally:
            svc.stop()
    out["speedup"] = round(out["batched"]["rps"] / out["one_by_one"]["rps"], 2)
    return out


# ------------------------------------------------------------------------------------ (c)


def bench_budget(args: argparse.Namespace, logdir: Path) -> dict:
    import torch

    from reasoning_ner.metrics import SentenceScore, score
    from reasoning_ner.prompt import render_prompt
    from reasoning_ner.records import read_records
    from reasoning_ner.serving.backends import TransformersBackend
    from reasoning_ner.serving.budget import build_prediction, generate_ner

    torch.set_num_threads(args.torch_threads)
    dev = Path(args.data) / "conll2003" / "dev.jsonl"
    if not dev.is_file():
        raise SystemExit(f"{dev} not found: run `rner data prepare --dataset conll2003 --out {args.data}`")
    records = read_records(dev)
    random.Random(args.seed).shuffle(records)
    records = records[: args.n]
    caps: list[int | None] = [int(c) for c in args.caps.split(",")] + [None]
    backend = TransformersBackend(args.model, max_batch_size=32, max_batch_wait_ms=5)
    backend.load()

    async def run(cap: int | None) -> list:
        async def one(rec):
            gen = await generate_ner(backend, render_prompt(rec.text, rec.schema, args.prompt_style), rec.schema,
                                     max_new_tokens=args.budget_max_new_tokens, max_answer_tokens=args.max_answer_tokens, budget=cap)
            return rec, gen, build_prediction(rec.text, rec.schema, gen, return_reasoning=False)
        return await asyncio.gather(*(one(r) for r in records))

    points = []
    for cap in caps:
        t0 = time.perf_counter()
        rows = asyncio.run(run(cap))
        sentences = [SentenceScore(
            pred_pairs=[(e.text, e.label) for e in p.entities] + [(u.text, u.label) for u in p.ungrounded],
            gold_pairs=[(e.text, e.label) for e in rec.entities],
            pred_offsets=[(e.start, e.end, e.label) for e in p.entities],
            gold_offsets=[(e.start, e.end, e.label) for e in rec.entities]) for rec, _, p in rows]
        report = score(sentences)
        thinking = [g.reasoning_tokens if g.reasoning_tokens is not None else g.completion_tokens for _, g, _ in rows]
        points.append({
            "cap": cap, "paper_f1": round(report["paper"]["f1"], 4), "strict_f1": round(report["strict"]["f1"], 4),
            "parse_rate": round(sum(p.parse_error is None for _, _, p in rows) / len(rows), 3),
            "mean_thinking_tokens": round(statistics.mean(thinking), 1),
            "capped_share": round(sum(g.capped for _, g, _ in rows) / len(rows), 3),
            "mean_completion_tokens": round(statistics.mean(g.completion_tokens for _, g, _ in rows), 1),
            "seconds": round(time.perf_counter() - t0, 2),
        })
        print(f"cap {cap}: {points[-1]}", flush=True)
    png = RESULTS / (f"serving_f1_vs_budget-{args.tag}.png" if args.tag else "serving_f1_vs_budget.png")
    plot_budget(points, png, args.tag or Path(args.model).name)
    return {"model": args.model, "dataset": "conll2003/dev", "sentences": len(records), "seed": args.seed,
            "max_new_tokens_uncapped": args.budget_max_new_tokens, "max_answer_tokens": args.max_answer_tokens,
            "points": points, "plot": str(png.relative_to(ROOT))}


def plot_budget(points: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [p["mean_thinking_tokens"] for p in points]
    ax.plot(xs, [100 * p["paper_f1"] for p in points], "o-", label="paper F1")
    ax.plot(xs, [100 * p["strict_f1"] for p in points], "s--", label="strict F1")
    ax.plot(xs, [100 * p["parse_rate"] for p in points], "^:", label="parse rate", alpha=0.6)
    groups: dict[tuple[float, float], list[str]] = {}
    for x, p in zip(xs, points):  # caps the model never reached land on the same point: one label
        groups.setdefault((x, p["paper_f1"]), []).append("uncapped" if p["cap"] is None else f"cap {p['cap']}")
    for (x, f1), names in groups.items():
        ax.annotate(", ".join(names), (x, 100 * f1), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("mean thinking tokens per sentence")
    ax.set_ylabel("%")
    ax.set_ylim(-2, 102)
    ax.set_title(f"F1 vs. reasoning budget ({title}, CoNLL-2003 dev)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["all", "proxy", "batching", "budget", "stub"])
    p.add_argument("--model", default="work/models/tiny-base", help="Model folder for (b) and (c).")
    p.add_argument("--data", default="work/data", help="Prepared data folder (conll2003/dev.jsonl) for (c).")
    p.add_argument("--latency-ms", default="200,500", help="(a) stub latencies (comma-separated); stub: its latency.")
    p.add_argument("--c1-requests", type=int, default=100, help="(a) sequential requests for the concurrency-1 latency.")
    p.add_argument("--seconds", type=float, default=8.0, help="(a) length of the measured load at the bound rate.")
    p.add_argument("--port", type=int, default=0, help="stub: port.")
    p.add_argument("--max-new-tokens", type=int, default=32, help="(b) tokens per request.")
    p.add_argument("--batched-requests", type=int, default=512)
    p.add_argument("--single-requests", type=int, default=96)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--prompt-style", default="compact")
    p.add_argument("--n", type=int, default=48, help="(c) dev sentences.")
    p.add_argument("--caps", default="0,4,8,16,32,64", help="(c) reasoning caps (uncapped is added).")
    p.add_argument("--budget-max-new-tokens", type=int, default=96, help="(c) tokens of an uncapped generation (tiny-cpu: 96).")
    p.add_argument("--max-answer-tokens", type=int, default=64, help="(c) tokens for the answer after a forced close.")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tag", default="", help="Store results as '<part>:<tag>' (and the plot as serving_f1_vs_budget-<tag>.png).")
    p.add_argument("--out", default="serving.json")
    args = p.parse_args()
    if args.part == "stub":
        run_stub(args.port, float(args.latency_ms))
        return
    if args.part in ("all", "batching", "budget") and not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"no model at {args.model}: run `rner model init-tiny --out {args.model}` (or pass --model)")
    out_file = RESULTS / args.out
    results = json.loads(out_file.read_text()) if out_file.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="rner-bench-") as tmp:
        logdir = Path(tmp)
        for part, fn in (("proxy", bench_proxy), ("batching", bench_batching), ("budget", bench_budget)):
            if args.part in ("all", part):
                started = machine()
                res = fn(args, logdir)
                res["machine"] = started
                results[f"{part}:{args.tag}" if args.tag else part] = res
                print(json.dumps({part: res}, indent=1), flush=True)
                RESULTS.mkdir(parents=True, exist_ok=True)
                out_file.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
