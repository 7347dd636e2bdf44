"""The service over real HTTP on 127.0.0.1.

* A real server process (``python -m reasoning_ner.serving.server``, what ``rner serve`` runs: kserve's
  ModelServer bound to loopback) with a tiny random model, exercised with httpx and the official
  ``openai`` client (chat, streaming, models), and a bounded load test at concurrency 64.
* The remote backend against a stub OpenAI-compatible server (a real HTTP peer on 127.0.0.1 that
  answers like vLLM with a reasoning parser), including the reasoning budget's continuation
  requests, structured-output parameters and every failure mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import psutil
import pytest
from aiohttp import web
from fastapi.testclient import TestClient

from reasoning_ner.modeling import init_tiny
from reasoning_ner.serving import ServeSettings, build_app, build_model
from reasoning_ner.serving.schemas import answer_json_schema
from tests.checks import sentence_of
from tests.serving_live import NAME, SMALL, StubUpstream, free_port, wait_ready

TEXT = "Ada Lovelace met Alan Turing in London."

# ------------------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    root = tmp_path_factory.mktemp("http")
    init_tiny(root / "tiny", SMALL)
    port = free_port()
    log = open(root / "server.log", "w")
    cmd = [sys.executable, "-m", "reasoning_ner.serving.server", "--model", str(root / "tiny"), "--port", str(port),
           "--no-access-log", "--set", "max_new_tokens=8", "--set", "max_answer_tokens=4", "--set", "torch_threads=1",
           "--set", "prompt_style=compact", "--set", "max_batch_size=32", "--set", "max_batch_wait_ms=5"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, root / "server.log")
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_server_listens_on_loopback_only(server) -> None:
    base, pid = server
    listening = [c for c in psutil.Process(pid).connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening), listening


def test_v1_v2_health_metadata_and_metrics_over_http(server) -> None:
    base, _ = server
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.post(f"/v1/models/{NAME}:predict", json={"instances": [{"text": TEXT, "labels": ["person"], "return_reasoning": True}]})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        (pred,) = r.json()["predictions"]
        assert pred["entities"] == [] and pred["parse_error"] and "reasoning" in pred
        r = c.post(f"/v2/models/{NAME}/infer", json={"inputs": [
            {"name": "text", "shape": [1], "datatype": "BYTES", "data": [TEXT]},
            {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["person"]']}]})
        assert r.status_code == 200 and {o["name"] for o in r.json()["outputs"]} == {"entities", "ungrounded", "parse_error"}
        r = c.post(f"/v1/models/{NAME}:predict", json={"instances": [{"text": "", "labels": ["person"]}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "instances[0].text"
        assert c.get("/v2/health/live").json() == {"live": True}
        assert c.get(f"/v2/models/{NAME}").json()["name"] == NAME
        assert "/v1/models/{model_name}:predict" in c.get("/openapi.json").json()["paths"]
        metrics = c.get("/metrics").text
        assert 'route="/v1/models/{model_name}:predict",status="200"' in metrics


def test_the_official_openai_client(server) -> None:
    base, _ = server
    client = openai.OpenAI(base_url=f"{base}/openai/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == [NAME]
    out = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=5)
    assert out.object == "chat.completion" and out.usage.completion_tokens <= 5
    whole = out.choices[0].message.content or ""
    stream = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=5,
                                            stream=True)
    chunks = list(stream)
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == whole
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    sampled = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hello"}], max_tokens=3,
                                             temperature=0.8)
    assert sampled.usage.completion_tokens <= 3
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert "model" in str(info.value)


def test_load_at_concurrency_64_no_5xx_no_lost_requests_stable_memory(server, record_property) -> None:
    base, pid = server
    proc = psutil.Process(pid)
    texts = [TEXT, "EU rejects German call to boycott British lamb .", "Peter Blackburn", "BRUSSELS 1996-08-22",
             "Japan began the defence of their Asian Cup title with a lucky 2-1 win against Syria ."]

    async def round_(n: int) -> tuple[list[int], list[float], float]:
        # aiohttp as the load generator: httpx's pool adds its own queueing tail at this concurrency.
        import aiohttp

        statuses: list[int] = []
        latencies: list[float] = []
        sem = asyncio.Semaphore(64)
        async with aiohttp.ClientSession(base_url=base, connector=aiohttp.TCPConnector(limit=64),
                                         timeout=aiohttp.ClientTimeout(total=60)) as c:
            async def one(i: int) -> None:
                async with sem:
                    t0 = time.perf_counter()
                    async with c.post(f"/v1/models/{NAME}:predict",
                                      json={"instances": [{"text": texts[i % len(texts)], "labels": ["person", "location"]}]}) as r:
                        body = await r.json()
                    latencies.append(time.perf_counter() - t0)
                    statuses.append(r.status)
                    assert r.status != 200 or len(body["predictions"]) == 1
            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return statuses, latencies, time.perf_counter() - t0

    asyncio.run(round_(128))  # warm-up: allocator and batch shapes
    rss_before = proc.memory_info().rss
    statuses, latencies, wall = [], [], 0.0
    for _ in range(3):
        s, lat, w = asyncio.run(round_(192))
        statuses += s
        latencies += lat
        wall += w
    rss_after = proc.memory_info().rss
    assert len(statuses) == 3 * 192  # nothing lost
    assert statuses.count(200) == len(statuses), {s: statuses.count(s) for s in set(statuses)}
    q = statistics.quantiles(latencies, n=100)
    result = {"requests": len(statuses), "throughput_rps": round(len(statuses) / wall, 1), "p50_ms": round(q[49] * 1000, 1),
              "p95_ms": round(q[94] * 1000, 1), "rss_growth_mb": round((rss_after - rss_before) / 2**20, 1)}
    for key, value in result.items():
        record_property(key, value)
    print(f"\nload test (concurrency 64): {result}")
    assert rss_after - rss_before < 64 * 2**20, result


# ------------------------------------------------------------------------------------- remote backend


class StubOpenAI(StubUpstream):
    """An OpenAI-compatible server that answers like vLLM with ``--reasoning-parser``.

    Chat: ``reasoning_content`` + a JSON answer naming the capitalised words of the sentence under the
    first label (plus one span that is not in the sentence and one label outside the schema).
    Completions: with ``</think>`` among the stops (budget phase 1) it thinks until ``max_tokens``
    (``finish_reason: length``), or closes at once when the sentence says SHORT; otherwise (phase 2)
    it writes the JSON answer. Sentences containing FAIL get a 500, SLOW sleeps 3 s, GARBAGE gets prose.
    """

    MODEL_CARD = {"id": "ner-llm", "object": "model", "created": 1, "owned_by": "stub"}

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, dict]] = []

    @staticmethod
    def _sentence_and_labels(text: str) -> tuple[str, list[str]]:
        """From a chat message or the user turn of a ChatML prompt: the paper style's ``Schema:`` and
        ``Sentence:`` lines, or the compact style's schema line and sentence line."""
        user = text.split("<|im_end|>", 1)[0].split("<|im_start|>user\n", 1)[-1]
        first_line = user.split("\n", 1)[0]
        labels = re.search(r"^Schema: (\[.*?\])$", user, re.MULTILINE)
        schema = labels.group(1) if labels else first_line if first_line.startswith("[") else None
        return sentence_of(text), (json.loads(schema) if schema else ["thing"])

    @staticmethod
    def _answer(sentence: str, labels: list[str]) -> str:
        if "GARBAGE" in sentence:
            return "I would rather not answer in JSON."
        names = re.findall(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)*\b", sentence)
        return json.dumps({"entities": {labels[0]: names + ["Nobody Here"], "bogus label": ["x"]}})

    async def _fault(self, sentence: str) -> web.Response | None:
        if "FAIL" in sentence:
            return web.json_response({"error": {"message": "engine crashed"}}, status=500)
        if "SLOW" in sentence:
            await asyncio.sleep(3)
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(("chat", body))
        sentence, labels = self._sentence_and_labels(body["messages"][-1]["content"])
        if (fault := await self._fault(sentence)) is not None:
            return fault
        reasoning, content = f"The sentence is: {sentence}", self._answer(sentence, labels)
        base = {"id": "chatcmpl-stub", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            return web.json_response({**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": content, "reasoning_content": reasoning},
                "finish_reason": "stop"}], "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        pieces = [{"reasoning_content": reasoning[:10]}, {"reasoning_content": reasoning[10:]}, {"content": content}]
        for delta in pieces:
            chunk = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {**base, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        return resp

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("completions", body))
        sentence, labels = self._sentence_and_labels(body["prompt"])
        if (fault := await self._fault(sentence)) is not None:
            return fault
        usage = {"prompt_tokens": 10, "completion_tokens": body["max_tokens"], "total_tokens": 10 + body["max_tokens"]}
        if "</think>" in body.get("stop", []):
            if "SHORT" in sentence:
                choice = {"index": 0, "text": "<think>\nEasy.\n</think>", "finish_reason": "stop", "stop_reason": "</think>"}
                usage["completion_tokens"] = 4
            else:
                choice = {"index": 0, "text": "<think>\n" + " ".join(["hmm"] * (body["max_tokens"] - 1)), "finish_reason": "length",
                          "stop_reason": None}
        else:
            choice = {"index": 0, "text": self._answer(sentence, labels), "finish_reason": "stop", "stop_reason": None}
            usage["completion_tokens"] = 12
        return web.json_response({"id": "cmpl-stub", "object": "text_completion", "created": 1, "model": body["model"],
                                  "choices": [choice], "usage": usage})


@pytest.fixture(scope="module")
def stub() -> Iterator[StubOpenAI]:
    with StubOpenAI().running() as s:
        yield s


def remote_client(url: str, **kw) -> TestClient:
    settings = ServeSettings(backend="remote", remote_url=url, remote_model="ner-llm", prompt_style="compact",
                             max_new_tokens=64, max_answer_tokens=32, **kw)
    return TestClient(build_app(build_model(settings)))


def predict(client: TestClient, text: str, labels=("person", "location"), **kw):
    return client.post(f"/v1/models/{NAME}:predict", json={"instances": [{"text": text, "labels": list(labels), **kw}]})


def test_remote_chat_with_structured_output_and_reasoning_content(stub) -> None:
    stub.requests.clear()
    with remote_client(stub.url) as c:
        resp = predict(c, TEXT, return_reasoning=True)
    assert resp.status_code == 200, resp.text
    (pred,) = resp.json()["predictions"]
    assert [(e["text"], e["label"], e["start"], e["end"]) for e in pred["entities"]] == [
        ("Ada Lovelace", "person", 0, 12), ("Alan Turing", "person", 17, 28), ("London", "person", 32, 38)]
    assert pred["ungrounded"] == [{"text": "Nobody Here", "label": "person"}]
    assert pred["reasoning"] == f"The sentence is: {TEXT}" and pred["parse_error"] is None
    assert any("bogus label" in r for r in pred["repairs"])
    ((kind, body),) = stub.requests
    assert kind == "chat" and body["model"] == "ner-llm" and body["temperature"] == 0
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema == answer_json_schema(["person", "location"])


@pytest.mark.parametrize("mode,key", [("structured_outputs", "structured_outputs"), ("guided_json", "guided_json"), ("none", None)])
def test_remote_structured_output_parameter_styles(stub, mode, key) -> None:
    stub.requests.clear()
    with remote_client(stub.url, remote_structured_output=mode) as c:
        assert predict(c, TEXT).status_code == 200
    body = stub.requests[-1][1]
    if key is None:
        assert not {"response_format", "structured_outputs", "guided_json"} & set(body)
    else:
        assert key in body and "response_format" not in body


def test_remote_reasoning_budget_forces_the_close_with_a_continuation(stub) -> None:
    stub.requests.clear()
    with remote_client(stub.url) as c:
        (pred,) = predict(c, TEXT, max_reasoning_tokens=5, return_reasoning=True).json()["predictions"]
    assert pred["reasoning_capped"] is True and pred["reasoning_tokens"] == 5
    assert [e["text"] for e in pred["entities"]] == ["Ada Lovelace", "Alan Turing", "London"]
    assert pred["reasoning"] == "hmm hmm hmm hmm"
    (k1, first), (k2, second) = stub.requests
    assert (k1, k2) == ("completions", "completions")
    assert first["max_tokens"] == 5 and "</think>" in first["stop"] and "response_format" not in first
    assert second["prompt"].startswith(first["prompt"]) and second["prompt"].endswith("hmm\n</think>\n")
    assert second["max_tokens"] == 32 and "response_format" in second


def test_remote_reasoning_closed_by_the_model_continues_after_it(stub) -> None:
    stub.requests.clear()
    with remote_client(stub.url, max_reasoning_tokens=50) as c:  # the deployment cap
        (pred,) = predict(c, "SHORT answer for Ada Lovelace").json()["predictions"]
    assert pred["reasoning_capped"] is False and [e["text"] for e in pred["entities"]] == ["Ada Lovelace"]
    assert stub.requests[1][1]["prompt"].endswith("<think>\nEasy.\n</think>\n")


def test_remote_failures_are_503_504_and_garbage_is_a_parse_error(stub) -> None:
    with remote_client(stub.url, request_timeout_s=1.0) as c:
        resp = predict(c, "FAIL for Ada")
        assert resp.status_code == 503 and "500" in resp.json()["error"]["message"]
        resp = predict(c, "SLOW for Ada")
        assert resp.status_code == 504 and resp.json()["error"]["type"] == "timeout_error"
        (pred,) = predict(c, "GARBAGE for Ada").json()["predictions"]
        assert pred["entities"] == [] and pred["parse_error"] == "no JSON object in the answer"
    with remote_client(f"http://127.0.0.1:{free_port()}/v1") as c:
        resp = predict(c, TEXT)
        assert resp.status_code == 503 and "unreachable" in resp.json()["error"]["message"]
        # Up (live) but not ready: no upstream answers its probes (test_serving_health.py).
        assert c.get("/v2/health/live").status_code == 200
        assert c.get("/v2/health/ready").status_code == 503 and c.get(f"/v2/models/{NAME}/ready").status_code == 503


def test_remote_openai_routes_pass_through(stub) -> None:
    stub.requests.clear()
    with remote_client(stub.url) as c:
        msg = {"model": NAME, "messages": [{"role": "user", "content": f"Sentence: {TEXT}"}], "max_tokens": 9, "top_k": 5}
        out = c.post("/openai/v1/chat/completions", json=msg).json()
        assert out["model"] == NAME and out["choices"][0]["message"]["reasoning_content"].startswith("The sentence")
        assert stub.requests[-1][1]["model"] == "ner-llm" and stub.requests[-1][1]["top_k"] == 5  # verbatim
        with c.stream("POST", "/openai/v1/chat/completions", json={**msg, "stream": True}) as resp:
            lines = [ln for ln in resp.iter_lines() if ln]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
        assert all(ch["model"] == NAME for ch in chunks)
        assert "".join(ch["choices"][0]["delta"].get("reasoning_content", "") for ch in chunks) == f"The sentence is: {TEXT}"
        fail = c.post("/openai/v1/chat/completions", json={**msg, "messages": [{"role": "user", "content": "Sentence: FAIL"}]})
        assert fail.status_code == 503
