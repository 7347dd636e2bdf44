"""A stub OpenAI-compatible teacher/judge server on 127.0.0.1 with fault injection.

It stands in for a remote reasoning LLM (which cannot run here) as a real HTTP peer: the
synthesizer talks to it exactly as to vLLM. Given gold records, it answers a teacher prompt with
a gold-grounded chain and JSON answer; a judge prompt with ``Score: N``. Faults are chosen per
sentence from a hash, so runs are reproducible:

* transient (first attempt only, so a retry succeeds): ``latency`` (every request), ``timeout``
  (sleeps past the client's timeout), ``rate_limit`` (429 + ``Retry-After``), ``server_error`` (500);
* content (every attempt, so they end as reasoned rejections): ``truncated`` (JSON cut off),
  ``hallucinate`` (a span not in the sentence), ``bad_label`` (a label outside the schema),
  ``low_judge`` (judge scores 3).

``rner cot stub-teacher --gold FILE --port 8000`` serves it for demos and the DVC docs.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ..prompt import render_answer
from ..records import NERRecord, read_records
from .offline import offline_chain

FAULTS = ("timeout", "rate_limit", "server_error", "truncated", "hallucinate", "bad_label", "low_judge")
_SENTENCE = re.compile(r"^Sentence: (.*?)$", re.MULTILINE)


@dataclass
class FaultPlan:
    latency_s: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)  # fault -> share of sentences
    timeout_sleep_s: float = 5.0
    retry_after_s: float = 0.05

    def fault_for(self, sentence: str) -> str | None:
        """Deterministic: the same sentence always draws the same fault (or none)."""
        x = int(hashlib.sha256(sentence.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        edge = 0.0
        for name in FAULTS:
            edge += self.rates.get(name, 0.0)
            if x < edge:
                return name
        return None


class StubTeacher:
    def __init__(self, gold: list[NERRecord], plan: FaultPlan | None = None, chain_style: str = "full"):
        self.by_text = {r.text: r for r in gold}
        self.plan = plan or FaultPlan()
        self.chain_style = chain_style
        self.attempts: Counter[str] = Counter()
        self.requests = 0
        self.served_faults: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "stub-teacher", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        is_judge = prompt.startswith("You grade reasoning chains")
        m = _SENTENCE.search(prompt)
        sentence = m.group(1) if m else ""
        key = ("judge:" if is_judge else "teacher:") + sentence
        self.attempts[key] += 1
        first_attempt = self.attempts[key] == 1
        fault = self.plan.fault_for(sentence)
        if self.plan.latency_s:
            await asyncio.sleep(self.plan.latency_s)
        if first_attempt and not is_judge and fault in ("timeout", "rate_limit", "server_error"):
            self.served_faults[fault] += 1
            if fault == "timeout":
                await asyncio.sleep(self.plan.timeout_sleep_s)
            elif fault == "rate_limit":
                return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": str(self.plan.retry_after_s)})
            else:
                return web.json_response({"error": "internal error"}, status=500)
        if is_judge:
            score = 3 if fault == "low_judge" else 9
            return self._reply(body, f"The chain is {'weak' if score < 9 else 'sound'}.\nScore: {score}", "")
        record = self.by_text.get(sentence) or NERRecord("unknown", sentence, [], [], "stub", "x")
        chain = offline_chain(record, self.chain_style)
        grouped = record.grouped_spans()
        if fault == "hallucinate":
            grouped.setdefault(record.schema[0] if record.schema else "thing", []).append("Zanzibar Quux")
            chain += ' Also "Zanzibar Quux".'
        if fault == "bad_label":
            grouped["weapon"] = ["sword"]
        answer = render_answer(grouped, None)
        if fault == "truncated":
            answer = answer[: max(1, len(answer) // 2)]
        if fault in ("hallucinate", "bad_label", "truncated"):
            self.served_faults[fault] += 1
        # Half the replies put the chain in reasoning_content (vLLM's reasoning parser), half inline.
        inline = int(hashlib.md5(sentence.encode()).hexdigest(), 16) % 2 == 0
        if inline:
            return self._reply(body, f"<think>\n{chain}\n</think>\n{answer}", "")
        return self._reply(body, answer, chain)

    @staticmethod
    def _reply(body: dict, content: str, reasoning: str) -> web.Response:
        message: dict = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        prompt_tokens = len(body["messages"][-1]["content"].split())
        completion_tokens = len((reasoning + " " + content).split())
        return web.json_response({
            "id": "chatcmpl-stub", "object": "chat.completion", "model": body.get("model", "stub-teacher"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })


async def start_stub(stub: StubTeacher, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the stub in the running event loop; returns the runner and the bound port."""
    runner = web.AppRunner(stub.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound


def serve_stub(gold_files: list[Path], host: str, port: int, plan: FaultPlan, chain_style: str = "full") -> None:
    gold = [r for f in gold_files for r in read_records(f)]
    web.run_app(StubTeacher(gold, plan, chain_style).app(), host=host, port=port, access_log=None, print=None)


def parse_faults(spec: str) -> dict[str, float]:
    """``"rate_limit=0.1,truncated=0.05"`` -> ``{"rate_limit": 0.1, "truncated": 0.05}``."""
    rates: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, value = part.partition("=")
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; choose from {', '.join(FAULTS)}")
        rates[name] = float(value)
    if sum(rates.values()) > 1.0:
        raise ValueError(f"fault rates add up to {sum(rates.values())} > 1")
    return rates

