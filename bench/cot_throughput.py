"""Synthesis throughput against the latency bound (issue: stub teacher, 100 ms, concurrency 32).

Bound = concurrency / latency = 32 / 0.1 s = 320 requests/s. In one run this measures, against
the same stub server (a separate process on 127.0.0.1):

* a bare httpx async client doing no work (the reference point: 0.88 of the bound seen here),
* a bare aiohttp client doing no work,
* the synthesizer itself (aiohttp client + verification + durable writes), via `synthesize()`.

Usage: .venv/bin/python bench/cot_throughput.py [--records 2000] [--data work/data]
Writes bench/results/cot_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from reasoning_ner.config import ZERO_SHOT_DATASETS, CoTConfig
from reasoning_ner.cot.prompts import teacher_prompt
from reasoning_ner.cot.synthesize import load_inputs, synthesize

LATENCY_S, CONCURRENCY = 0.1, 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def bare(url: str, payloads: list[dict], kind: str) -> float:
    queue = list(reversed(payloads))
    started = time.perf_counter()

    async def run_httpx() -> None:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            async def worker() -> None:
                while queue:
                    (await client.post(url, json=queue.pop())).raise_for_status()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def run_aiohttp() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
            async def worker() -> None:
                while queue:
                    async with session.post(url, json=queue.pop()) as resp:
                        resp.raise_for_status()
                        await resp.read()
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    await (run_httpx() if kind == "httpx" else run_aiohttp())
    return len(payloads) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--data", type=Path, default=Path("work/data"))
    args = ap.parse_args()
    gold_file = args.data / "conll2003" / "train.jsonl"
    records = load_inputs([gold_file], ZERO_SHOT_DATASETS, args.records)
    port = free_port()
    rner = Path(sys.executable).with_name("rner")
    server = subprocess.Popen([str(rner), "cot", "stub-teacher", "--gold", str(gold_file), "--port", str(port),
                               "--latency-ms", str(LATENCY_S * 1000)], stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(100):
            try:
                httpx.get(base + "/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        payloads = [{"model": "m", "messages": [{"role": "user", "content": teacher_prompt(r.text, r.schema, "reannotate")}]}
                    for r in records]
        bound = CONCURRENCY / LATENCY_S
        results = {"bound_rps": bound, "records": len(records), "latency_s": LATENCY_S, "concurrency": CONCURRENCY}
        results["bare_httpx_rps"] = asyncio.run(bare(base + "/chat/completions", payloads, "httpx"))
        results["bare_aiohttp_rps"] = asyncio.run(bare(base + "/chat/completions", payloads, "aiohttp"))
        with tempfile.TemporaryDirectory() as tmp:
            cfg = CoTConfig(teacher="openai", teacher_url=base, concurrency=CONCURRENCY, max_records_per_dataset=args.records)
            stats = synthesize([gold_file], Path(tmp), cfg, ZERO_SHOT_DATASETS, progress=False)
        results["synthesizer_rps"] = stats["last_run"]["throughput_rps"]
        results["synthesizer_accepted"] = stats["accepted"]
        for key in ("bare_httpx", "bare_aiohttp", "synthesizer"):
            results[f"{key}_ratio"] = round(results[f"{key}_rps"] / bound, 3)
    finally:
        server.terminate()
        server.wait(10)
    out = Path(__file__).parent / "results" / "cot_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
