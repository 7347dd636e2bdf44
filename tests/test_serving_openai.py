"""OpenAI parameters honoured or refused, and stop strings matched on the text (issue 14).

* Stops: the in-process backend matches stop strings on the decoded text, so a stop that spans two
  tokens or ends inside one is found and cut off, streamed or not (the model is an untrained tiny one;
  a seeded sample gives varied tokens, and the stop strings are picked from them).
* ``response_format`` with the UNTRAINED tiny model: the grammar (llguidance) and the closing near the
  token limit give valid JSON (schema-valid for json_schema) with no repair or retry, in batches mixing
  rows with and without a grammar, with and without thinking before the answer.
* The official ``openai`` client against a live server on 127.0.0.1 (uvicorn in a thread): n, seed,
  logprobs, max_completion_tokens, the thinking budget (extra_body and header), ``models.retrieve``,
  null content, reasoning token usage, and every refusal (400 naming the parameter, then a good request).
* The remote backend against a recording OpenAI-compatible stand-in: structured output passed through,
  400 where the remote cannot honour it, the budget header sent as vLLM's ``thinking_token_budget``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from aiohttp import web
from fastapi.testclient import TestClient

from reasoning_ner.modeling import builtin_corpus, init_tiny, train_tokenizer
from reasoning_ner.prompt import THINK_OPEN, chatml
from reasoning_ner.serving import ServeSettings, build_app, build_model
from reasoning_ner.serving.backends import GenRequest, GenResult, TransformersBackend
from reasoning_ner.serving.constrained import response_format_grammar
from reasoning_ner.serving.transformers_backend import _Item, _RowState
from pydantic import TypeAdapter

from reasoning_ner.serving.schemas import ResponseFormat, answer_json_schema
from tests.serving_live import NAME, SMALL, free_port, uvicorn_server

PROMPT = chatml("Hello there, who are you?")
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"], "additionalProperties": False}


def settings(**kw) -> ServeSettings:
    base = dict(max_new_tokens=48, max_answer_tokens=32, prompt_style="compact", torch_threads=1, max_batch_wait_ms=20,
                request_timeout_s=60)
    return ServeSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("openai") / "tiny"
    init_tiny(out, SMALL)
    return out


@pytest.fixture(scope="module")
def backend(tiny_dir: Path) -> TransformersBackend:
    b = TransformersBackend(str(tiny_dir), torch_threads=1, max_batch_wait_ms=20)
    b.load()
    return b


@pytest.fixture(scope="module")
def thinker(tiny_dir: Path) -> TransformersBackend:
    """The same untrained model, pushed to emit <think> (so its thinking runs until the budget or the
    answer's reserve forces </think>): the answer after it must still follow the grammar."""
    b = TransformersBackend(str(tiny_dir), torch_threads=1, max_batch_wait_ms=20)
    b.load()
    think = b.tokenizer.convert_tokens_to_ids(THINK_OPEN)

    def push(module, args, out):
        out[..., think] += 100.0
        return out

    b.model.get_output_embeddings().register_forward_hook(push)
    return b


def run(coro):
    return asyncio.run(coro)


async def collect(backend: TransformersBackend, req: GenRequest) -> tuple[list[str], GenResult]:
    deltas, result = [], None
    async for event in backend.stream(req):
        if isinstance(event, GenResult):
            result = event
        else:
            deltas.append(event)
    assert result is not None
    return deltas, result


def answer_of(text: str) -> str:
    return text.split("</think>")[-1]


# ------------------------------------------------------------------------------------- stops on text


@pytest.fixture(scope="module")
def sample(backend) -> tuple[str, list[tuple[int, str]]]:
    """A seeded sample (varied tokens from the untrained model): its text and (start, text) of each token
    whose text is whole characters (a byte-level token may hold half a character)."""
    result = run(backend.generate(GenRequest(PROMPT, 40, temperature=1.0, seed=7)))
    ids = backend.tokenizer(result.text, add_special_tokens=False)["input_ids"]
    tokens = []
    for k, t in enumerate(ids):
        start, piece = len(backend.tokenizer.decode(ids[:k])), backend.tokenizer.decode([t])
        if "\ufffd" not in piece and result.text[start:start + len(piece)] == piece:
            tokens.append((start, piece))
    return result.text, tokens


def _stop_spanning(text: str, tokens: list[tuple[int, str]]) -> str:
    """Two characters across a token boundary, whose first occurrence is at that boundary."""
    for (start, a), (nxt, b) in zip(tokens, tokens[1:]):
        stop = a[-1:] + b[:1]
        if nxt == start + len(a) and text.find(stop) == nxt - 1:
            return stop
    raise AssertionError(f"no token boundary to test in {tokens}")


def _stop_inside(text: str, tokens: list[tuple[int, str]]) -> str:
    """A piece of one token's text, strictly inside it, whose first occurrence is there."""
    for start, piece in tokens:
        if len(piece) >= 3 and text.find(piece[1:-1]) == start + 1:
            return piece[1:-1]
    raise AssertionError(f"no token long enough to test in {tokens}")


@pytest.mark.parametrize("where", ["spanning two tokens", "inside one token"])
def test_stop_strings_are_matched_on_the_text_streamed_or_not(backend, sample, where) -> None:
    text, tokens = sample
    stop = _stop_spanning(text, tokens) if where == "spanning two tokens" else _stop_inside(text, tokens)
    expected = text[:text.find(stop)]
    cut = GenRequest(PROMPT, 40, temperature=1.0, seed=7, stop=("never-there", stop))
    result = run(backend.generate(cut))
    assert (result.text, result.finish_reason, result.stop_reason) == (expected, "stop", stop)
    assert result.completion_tokens < 40  # generation stopped there
    deltas, streamed = run(collect(backend, cut))
    assert "".join(deltas) == expected and streamed.text == expected and streamed.stop_reason == stop
    assert not any(stop in d for d in deltas)


def test_incremental_text_is_the_whole_decode_when_the_decoder_rewrites_across_tokens() -> None:
    """The tiny tokenizer's "answers" mode drops, when decoding, the space it put after '["' and '", "'; a row
    decoded one token at a time must see enough tokens before the newest one to do the same."""
    tokenizer = train_tokenizer(builtin_corpus(), vocab_size=800, space_before_names="answers")
    completion = ('<think>\nCandidates: EU; Mexico City.\n</think>\n'
                  '{"entities": {"location": ["Mexico City", "EU", "", " Bonn"], "organization": ["EU"]}}')
    row = _RowState(_Item(GenRequest(PROMPT, 200), ids=[]))
    for token in tokenizer(completion, add_special_tokens=False)["input_ids"]:
        row.step(token, tokenizer, end_ids=set())
    assert row.text == completion


def test_a_single_token_stop_inside_a_longer_token_is_found(backend) -> None:
    """The greedy untrained model writes newlines; "\\n" is one token, but the stop is also found when
    it is part of another token (the old token-id match missed it), and "\\n\\n" spans two tokens."""
    for stop in ("\n", "\n\n"):
        result = run(backend.generate(GenRequest(PROMPT, 8, stop=(stop,))))
        assert (result.text, result.finish_reason, result.stop_reason) == ("", "stop", stop)


def test_the_think_close_stop_still_counts_reasoning_tokens(thinker) -> None:
    result = run(thinker.generate(GenRequest(PROMPT, 12, think_budget=3, stop=("</think>",))))
    assert result.stop_reason == "</think>" and result.reasoning_tokens == result.completion_tokens
    assert result.text.startswith(THINK_OPEN) and "</think>" not in result.text


# ------------------------------------------------------------------------------------- grammar


def grammar(kind: str) -> str:
    fmt = {"type": "json_object"} if kind == "json_object" else \
        {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    g = response_format_grammar(TypeAdapter(ResponseFormat).validate_python(fmt))
    assert g is not None
    return g


def check_json(kind: str, result: GenResult) -> Any:
    assert result.finish_reason == "stop", result
    value = json.loads(answer_of(result.text))  # no repair, no retry
    assert isinstance(value, dict)
    if kind == "json_schema":
        jsonschema.validate(value, SCHEMA)
    return value


@pytest.fixture(scope="module")
def answers_backend(tmp_path_factory: pytest.TempPathFactory) -> TransformersBackend:
    """The same model with the tokenizer's "answers" mode (a normalizer that inserts a space): the grammar
    must run on the tokens' bytes, never on a re-normalized tokenization of them."""
    out = tmp_path_factory.mktemp("openai-answers") / "tiny"
    init_tiny(out, SMALL.model_copy(update={"space_before_names": "answers"}))
    b = TransformersBackend(str(out), torch_threads=1, max_batch_wait_ms=20)
    b.load()
    return b


@pytest.mark.parametrize("which", ["backend", "answers_backend"])
@pytest.mark.parametrize("kind", ["json_object", "json_schema"])
def test_untrained_model_gives_valid_json_in_a_mixed_batch(request, which, kind) -> None:
    backend = request.getfixturevalue(which)
    g = grammar(kind)
    reqs = [GenRequest(PROMPT, n, grammar=g, temperature=t, seed=s) for n in (32, 48) for t, s in ((0.0, None), (1.0, 1), (1.0, 2))]
    plain = GenRequest(PROMPT, 8)

    async def batch():
        return await asyncio.gather(backend.generate(plain), *(backend.generate(r) for r in reqs))

    before = backend.batches
    alone = run(backend.generate(plain))
    out = run(batch())
    assert backend.batches - before == 2  # the solo row, then ONE generate call for the mixed batch
    assert out[0].text == alone.text  # a row without a grammar is untouched by its neighbours'
    for result, req in zip(out[1:], reqs):
        check_json(kind, result)
        assert result.completion_tokens <= req.max_new_tokens


def test_the_answer_is_closed_within_the_token_limit(backend) -> None:
    """A string the untrained model would never end is closed in time: the shortest schema-valid answer
    is 25 tokens here, so every limit from 30 up ends with a complete answer."""
    g = grammar("json_schema")
    for limit in (30, 37, 45):
        result = run(backend.generate(GenRequest(PROMPT, limit, grammar=g, temperature=1.0, seed=limit)))
        check_json("json_schema", result)
        assert result.completion_tokens <= limit
    short = run(backend.generate(GenRequest(PROMPT, 12, grammar=g)))
    assert short.finish_reason == "length"  # no complete answer fits: said so, not a broken "stop"


@pytest.mark.parametrize("kind", ["json_object", "json_schema"])
def test_thinking_is_free_and_the_answer_after_it_is_constrained(thinker, kind) -> None:
    g = grammar(kind)
    for req in (GenRequest(PROMPT, 48, grammar=g, answer_reserve=32),  # thinks until only the reserve is left
                GenRequest(PROMPT, 48, grammar=g, think_budget=5)):  # thinks 5 tokens, then </think> is forced
        result = run(thinker.generate(req))
        assert result.text.startswith(THINK_OPEN) and "</think>" in result.text
        check_json(kind, result)
    assert result.reasoning_tokens == 5 + 2  # the budget, then "\n</think>"
    deltas, streamed = run(collect(thinker, GenRequest(PROMPT, 48, grammar=g, think_budget=5)))
    assert "".join(deltas) == streamed.text == result.text


def test_a_schema_the_grammar_cannot_enforce_is_refused() -> None:
    fmt = TypeAdapter(ResponseFormat).validate_python({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}})
    with pytest.raises(Exception) as info:
        response_format_grammar(fmt)
    assert getattr(info.value, "param", None) == "response_format.json_schema.schema" and info.value.status == 400


# ------------------------------------------------------------------------------------- the openai client


@pytest.fixture(scope="module")
def live(backend, thinker) -> Iterator[tuple[openai.OpenAI, openai.OpenAI, str]]:
    """Two live servers on 127.0.0.1: the plain untrained model and the thinking one."""
    with uvicorn_server(build_app(build_model(settings(), backend=backend))) as url, \
            uvicorn_server(build_app(build_model(settings(), backend=thinker))) as thinking_url:
        def client(u: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=f"{u}/openai/v1", api_key="unused", max_retries=0, timeout=60)
        yield client(url), client(thinking_url), url


MSG = [{"role": "user", "content": "Hello there, who are you?"}]


def test_response_format_through_the_openai_client(live) -> None:
    plain, thinking, _ = live
    for client in (plain, thinking):
        out = client.chat.completions.create(model=NAME, messages=MSG, max_tokens=40, response_format={"type": "json_object"})
        assert isinstance(json.loads(out.choices[0].message.content), dict)
        out = client.chat.completions.create(
            model=NAME, messages=MSG, max_completion_tokens=48, temperature=0.7, seed=3,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}})
        jsonschema.validate(json.loads(out.choices[0].message.content), SCHEMA)
    assert out.choices[0].message.reasoning_content is not None  # the thinking model thought first
    stream = thinking.chat.completions.create(model=NAME, messages=MSG, max_tokens=40, stream=True,
                                              response_format={"type": "json_object"})
    assert isinstance(json.loads("".join(c.choices[0].delta.content or "" for c in stream if c.choices)), dict)


def test_n_seed_and_max_completion_tokens(live) -> None:
    client, _, _ = live
    kw: dict[str, Any] = dict(model=NAME, messages=MSG, temperature=1.0, max_completion_tokens=6, max_tokens=40)
    a = client.chat.completions.create(n=3, seed=11, **kw)
    b = client.chat.completions.create(n=3, seed=11, **kw)
    c = client.chat.completions.create(n=1, seed=12, **kw)
    d = client.chat.completions.create(n=1, seed=99, **kw)
    texts = [ch.message.content for ch in a.choices]
    assert [ch.index for ch in a.choices] == [0, 1, 2] and texts == [ch.message.content for ch in b.choices]
    assert len(set(texts)) == 3 and c.choices[0].message.content == texts[1]  # choice i samples with seed + i
    assert d.choices[0].message.content not in texts
    assert a.usage.completion_tokens <= 3 * 6  # max_completion_tokens wins over max_tokens
    stream = client.chat.completions.create(n=3, seed=11, stream=True, **kw)
    streamed = ["", "", ""]
    for chunk in stream:
        for ch in chunk.choices:
            streamed[ch.index] += ch.delta.content or ""
    assert streamed == texts


def test_logprobs_from_the_scores(live) -> None:
    client, _, _ = live
    out = client.chat.completions.create(model=NAME, messages=MSG, max_tokens=5, logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens and "".join(t.token for t in content) == out.choices[0].message.content
    for t in content:  # greedy: the chosen token is the most likely one
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token and t.logprob == t.top_logprobs[0].logprob
        assert t.logprob <= 0 and bytes(t.bytes).decode() == t.token
    out = client.chat.completions.create(model=NAME, messages=MSG, max_tokens=3, logprobs=True)
    assert all(t.top_logprobs == [] for t in out.choices[0].logprobs.content)
    assert client.chat.completions.create(model=NAME, messages=MSG, max_tokens=3).choices[0].logprobs is None


def test_thinking_budget_in_the_body_or_a_header_null_content_and_reasoning_usage(live) -> None:
    _, thinking, url = live
    out = thinking.chat.completions.create(model=NAME, messages=MSG, max_tokens=30, extra_body={"thinking_token_budget": 4})
    assert out.usage.completion_tokens_details.reasoning_tokens == 4 + 2  # then "\n</think>" was forced
    header = thinking.with_options(default_headers={"X-Thinking-Token-Budget": "6"})
    out = header.chat.completions.create(model=NAME, messages=MSG, max_tokens=30)
    assert out.usage.completion_tokens_details.reasoning_tokens == 6 + 2
    out = header.chat.completions.create(model=NAME, messages=MSG, max_tokens=30, extra_body={"thinking_token_budget": 0})
    assert out.usage.completion_tokens_details.reasoning_tokens == 3  # the body wins: "<think>\n</think>" at once
    assert out.choices[0].message.reasoning_content == ""
    only = thinking.chat.completions.create(model=NAME, messages=MSG, max_tokens=6)  # never closes its think block
    assert only.choices[0].message.content is None and only.choices[0].message.reasoning_content
    assert only.usage.completion_tokens_details.reasoning_tokens == only.usage.completion_tokens == 6
    raw = httpx.post(f"{url}/openai/v1/chat/completions", json={"model": NAME, "messages": MSG, "max_tokens": 4})
    assert raw.json()["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}  # no think block


def test_models_retrieve(live) -> None:
    client, _, _ = live
    assert client.models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-4")
    assert info.value.status_code == 404 and info.value.body["param"] == "model" and "gpt-4" in info.value.body["message"]


REFUSED = [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"reasoning_effort": "low"}, "reasoning_effort"),
    ({"verbosity": "low"}, "verbosity"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 0.5}, "frequency_penalty"),
    ({"logit_bias": {"5": 10}}, "logit_bias"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "stream": True}, "logprobs"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.json_schema"),
    ({"n": 17}, "n"),
    ({"thinking_token_budget": -1}, "thinking_token_budget"),
]


@pytest.mark.parametrize("extra,param", REFUSED, ids=[p for _, p in REFUSED])
def test_every_refusal_is_400_naming_the_parameter_then_a_good_request_works(live, extra, param) -> None:
    client, _, _ = live
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=NAME, messages=MSG, max_tokens=2, extra_body=extra)
    assert info.value.status_code == 400 and info.value.body["param"] == param and param.split(".")[0] in info.value.body["message"]
    assert client.chat.completions.create(model=NAME, messages=MSG, max_tokens=2).choices[0].finish_reason in ("stop", "length")


def test_a_bad_budget_header_is_400_naming_it(live) -> None:
    _, _, url = live
    r = httpx.post(f"{url}/openai/v1/chat/completions", headers={"X-Thinking-Token-Budget": "lots"},
                   json={"model": NAME, "messages": MSG, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-thinking-token-budget"
    neutral = {"tool_choice": "none", "presence_penalty": 0, "logit_bias": {}, "modalities": ["text"], "user": "u", "store": False}
    r = httpx.post(f"{url}/openai/v1/chat/completions", json={"model": NAME, "messages": MSG, "max_tokens": 2, **neutral})
    assert r.status_code == 200, r.text  # neutral values change nothing and are accepted


# ------------------------------------------------------------------------------------- remote


class Recorder:
    """An OpenAI-compatible stand-in on 127.0.0.1 that records the bodies it gets."""

    def __init__(self) -> None:
        self.port, self.bodies = free_port(), []
        self.url = f"http://127.0.0.1:{self.port}/v1"

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        message = {"role": "assistant", "content": '{"a": 1}', "reasoning_content": "hm"}
        return web.json_response({"id": "x", "object": "chat.completion", "created": 1, "model": body["model"],
                                  "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                                            "completion_tokens_details": {"reasoning_tokens": 2}}})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "ner-llm", "object": "model"}]})

    def __enter__(self) -> Recorder:
        started = threading.Event()

        def serve() -> None:
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self.chat)
            app.router.add_get("/v1/models", self.models)
            runner = web.AppRunner(app, access_log=None)
            self.loop.run_until_complete(runner.setup())
            self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            self.stop = asyncio.Event()
            started.set()
            self.loop.run_until_complete(self.stop.wait())
            self.loop.run_until_complete(runner.cleanup())

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        started.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def remote_client(url: str, **kw) -> TestClient:
    return TestClient(build_app(build_model(ServeSettings(backend="remote", remote_url=url, remote_model="ner-llm", **kw))))


def test_remote_passes_structured_output_and_the_budget_through() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with Recorder() as up, remote_client(up.url) as client:
        body = {"model": NAME, "messages": MSG, "response_format": fmt, "logprobs": True, "n": 2, "seed": 5}
        r = client.post("/openai/v1/chat/completions", json=body, headers={"X-Thinking-Token-Budget": "9"})
        assert r.status_code == 200 and r.json()["model"] == NAME
        assert r.json()["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}
        sent = up.bodies[-1]
        assert sent["response_format"] == fmt and sent["model"] == "ner-llm" and sent["thinking_token_budget"] == 9
        assert (sent["logprobs"], sent["n"], sent["seed"]) == (True, 2, 5)
        assert client.get("/openai/v1/models/" + NAME).json()["id"] == NAME
        r = client.post("/openai/v1/chat/completions", json={"model": NAME, "messages": MSG, "tools": [{"type": "function"}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
        assert len(up.bodies) == 1  # refused before the upstream saw it


def test_remote_without_structured_output_refuses_response_format() -> None:
    with Recorder() as up, remote_client(up.url, remote_structured_output="none") as client:
        r = client.post("/openai/v1/chat/completions", json={"model": NAME, "messages": MSG, "response_format": {"type": "json_object"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
        assert "remote_structured_output" in r.json()["error"]["message"] and up.bodies == []
        ok = client.post("/openai/v1/chat/completions", json={"model": NAME, "messages": MSG, "response_format": {"type": "text"}})
        assert ok.status_code == 200 and up.bodies[-1]["response_format"] == {"type": "text"}


def test_the_answer_schema_lets_the_model_write_labels_in_its_own_order(backend) -> None:
    """Grammar engines emit ``properties`` in the schema's order; the answer schema must not impose one
    (the model writes labels in order of first mention), and still refuses a label it was not offered."""
    import llguidance
    import llguidance.hf

    fmt = TypeAdapter(ResponseFormat).validate_python(
        {"type": "json_schema", "json_schema": {"name": "ner_answer", "schema": answer_json_schema(["location", "person"])}})
    g = response_format_grammar(fmt)
    tokenizer = llguidance.hf.from_tokenizer(backend.tokenizer)

    def accepts(text: str) -> bool:
        matcher = llguidance.LLMatcher(tokenizer, g)
        ok = matcher.consume_tokens(backend.tokenizer(text, add_special_tokens=False)["input_ids"])
        return bool(ok) and not matcher.is_error() and matcher.is_accepting()

    assert accepts('{"entities": {"person": ["Ada"], "location": ["London"]}}')
    assert accepts('{"entities": {"location": ["London"], "person": ["Ada"]}}')
    assert accepts('{"entities": {}}')
    assert not accepts('{"entities": {"date": ["1815"]}}')
    assert not accepts('{"entities": {"persons": ["Ada"]}}')
