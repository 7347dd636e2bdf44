"""The NER service in process (FastAPI TestClient): both protocols, the OpenAI routes, every error
path, the reasoning budget, dynamic batching, answer repair and the metrics.

The model is a tiny random one built here (garbage outputs, which is the point for the protocol:
garbage must give empty entities and a parse error, never a 500). Generation lengths are tiny.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
from fastapi.testclient import TestClient

from reasoning_ner.config import TinyModelConfig, load_config
from reasoning_ner.modeling import init_tiny
from reasoning_ner.prompt import chatml, render_prompt
from reasoning_ner.serving import ServeSettings, build_app, build_model, settings_from_config
from reasoning_ner.serving.backends import GenRequest, Overloaded, TransformersBackend, render_chatml
from reasoning_ner.serving.budget import NERGeneration, build_prediction, close_truncated_json, effective_budget, generate_ner
from reasoning_ner.serving.schemas import answer_json_schema
from reasoning_ner.serving.chat import ReasoningSplitter, split_reasoning_text

SMALL = TinyModelConfig(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=512)
NAME = "reasoning-ner"
PREDICT = f"/v1/models/{NAME}:predict"
INFER = f"/v2/models/{NAME}/infer"
TEXT = "Ada Lovelace met Alan Turing in London."


def settings(**kw) -> ServeSettings:
    base = dict(max_new_tokens=8, max_answer_tokens=4, prompt_style="compact", torch_threads=1, max_text_chars=200,
                max_labels=5, max_instances=4, max_body_bytes=4096, max_batch_wait_ms=20, request_timeout_s=30)
    base.update(kw)
    return ServeSettings(**base)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serving") / "tiny"
    init_tiny(out, SMALL)
    return out


@pytest.fixture(scope="module")
def model(tiny_dir: Path):
    return build_model(settings(), str(tiny_dir))


@pytest.fixture(scope="module")
def client(model):
    with TestClient(build_app(model)) as c:
        yield c


def other_client(model, **kw) -> TestClient:
    """Another app with other settings over the same loaded backend."""
    return TestClient(build_app(build_model(settings(**kw), backend=model.backend)))


def v1(text: str = TEXT, labels=("person", "location"), **kw) -> dict:
    return {"instances": [{"text": text, "labels": list(labels), **kw}]}


def v2(texts=(TEXT,), labels='["person", "location"]', extra=()) -> dict:
    return {"inputs": [
        {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)},
        {"name": "labels", "shape": [1], "datatype": "BYTES", "data": [labels]},
        *extra,
    ]}


def assert_error(resp, status: int, param: str | None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == status and err["message"]
    if param is not None:
        assert err["param"] == param, err
        assert param.split(".")[-1].split("[")[0] in err["message"] or param in err["message"], err
    return err


# ------------------------------------------------------------------------------------- V1


def test_v1_predict_garbage_model_gives_empty_entities_and_parse_error(client) -> None:
    resp = client.post(PREDICT, json=v1())
    assert resp.status_code == 200, resp.text
    (pred,) = resp.json()["predictions"]
    assert pred["entities"] == [] and isinstance(pred["parse_error"], str) and pred["parse_error"]
    assert "reasoning" not in pred  # only when asked
    assert pred["completion_tokens"] >= 1


def test_v1_predict_returns_reasoning_only_when_asked(client) -> None:
    body = {"instances": [{"text": TEXT, "labels": ["person"], "return_reasoning": True},
                          {"text": "Paris is nice.", "labels": ["location"]}]}
    preds = client.post(PREDICT, json=body).json()["predictions"]
    assert isinstance(preds[0]["reasoning"], str) and "reasoning" not in preds[1]


def test_v1_accepts_a_body_without_content_type(client) -> None:
    resp = client.post(PREDICT, content=json.dumps(v1()).encode(), headers={"content-type": ""})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("body,status,param", [
    ({"instances": [{"text": "", "labels": ["person"]}]}, 400, "instances[0].text"),
    ({"instances": [{"text": "   \n", "labels": ["person"]}]}, 400, "instances[0].text"),
    ({"instances": [{"text": 5, "labels": ["person"]}]}, 400, "instances[0].text"),
    ({"instances": [{"text": "x" * 201, "labels": ["person"]}]}, 400, "instances[0].text"),
    ({"instances": [{"text": "Ada", "labels": []}]}, 400, "instances[0].labels"),
    ({"instances": [{"text": "Ada"}]}, 400, "instances[0].labels"),
    ({"instances": [{"text": "Ada", "labels": "person"}]}, 400, "instances[0].labels"),
    ({"instances": [{"text": "Ada", "labels": ["a", "b", "c", "d", "e", "f"]}]}, 400, "instances[0].labels"),
    ({"instances": [{"text": "Ada", "labels": [" "]}]}, 400, "instances[0].labels[0]"),
    ({"instances": [{"text": "Ada", "labels": [3]}]}, 400, "instances[0].labels[0]"),
    ({"instances": [{"text": "Ada", "labels": ["person"], "return_reasoning": "yes"}]}, 400, "instances[0].return_reasoning"),
    ({"instances": [{"text": "Ada", "labels": ["person"], "max_reasoning_tokens": -1}]}, 400, "instances[0].max_reasoning_tokens"),
    ({"instances": [{"text": "Ada", "labels": ["person"], "max_reasoning_tokens": 1.5}]}, 400, "instances[0].max_reasoning_tokens"),
    ({"instances": [{"text": "Ada", "labels": ["person"], "colour": "red"}]}, 400, "instances[0].colour"),
    ({"instances": []}, 400, "instances"),
    ({"instances": [{"text": "Ada", "labels": ["p"]}] * 5}, 400, "instances"),
    ({"instances": {"text": "Ada"}}, 400, "instances"),
    ({}, 400, "instances"),
    ([1, 2], 400, "body"),
])
def test_v1_bad_inputs_get_400_naming_the_field(client, body, status, param) -> None:
    assert_error(client.post(PREDICT, json=body), status, param)


def test_v1_malformed_json_is_400(client) -> None:
    err = assert_error(client.post(PREDICT, content=b'{"instances": [', headers={"content-type": "application/json"}), 400, "body")
    assert "malformed JSON" in err["message"]


def test_v1_non_json_content_type_is_415(client) -> None:
    assert_error(client.post(PREDICT, content=b"text=Ada", headers={"content-type": "application/x-www-form-urlencoded"}),
                 415, "content-type")


def test_v1_unknown_model_is_404(client) -> None:
    assert_error(client.post("/v1/models/nope:predict", json=v1()), 404, "model_name")


def test_body_over_the_limit_is_413(client) -> None:
    body = {"instances": [{"text": "word " * 1000, "labels": ["person"]}]}
    assert_error(client.post(PREDICT, json=body), 413, "body")


def test_request_timeout_is_504(model) -> None:
    with other_client(model, request_timeout_s=0.001, max_new_tokens=64) as c:
        err = assert_error(c.post(PREDICT, json=v1()), 504, None)
        assert "request_timeout_s" in err["message"]


def test_backend_failure_is_503_with_a_message(tiny_dir) -> None:
    # A model whose weights are gone: loading is lazy here, so the first request finds the failure.
    failing = build_model(settings(), str(tiny_dir), load=False)
    failing.ready = True
    with TestClient(build_app(failing)) as c:
        err = assert_error(c.post(PREDICT, json=v1()), 503, None)
        assert "not loaded" in err["message"]


def test_prompt_longer_than_the_context_is_400_naming_the_text(model) -> None:
    with other_client(model, max_new_tokens=500, max_text_chars=4000, max_body_bytes=65536) as c:
        err = assert_error(c.post(PREDICT, json=v1("Ada Lovelace " * 200)), 400, "instances[0].text")
        assert "context" in err["message"]


# ------------------------------------------------------------------------------------- V2


def test_v2_infer_layout(client) -> None:
    body = v2(texts=(TEXT, "Paris is nice."), extra=[
        {"name": "return_reasoning", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        {"name": "max_reasoning_tokens", "shape": [1], "datatype": "INT64", "data": [2]},
    ])
    body["id"] = "req-1"
    resp = client.post(INFER, json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["id"] == "req-1" and out["model_name"] == NAME
    tensors = {t["name"]: t for t in out["outputs"]}
    assert set(tensors) == {"entities", "ungrounded", "parse_error", "reasoning"}
    for t in tensors.values():
        assert t["datatype"] == "BYTES" and t["shape"] == [2] and len(t["data"]) == 2
    assert json.loads(tensors["entities"]["data"][0]) == [] and tensors["parse_error"]["data"][0]
    assert tensors["reasoning"]["data"][1] == ""


def test_v2_without_id_gets_one(client) -> None:
    out = client.post(INFER, json=v2()).json()
    assert isinstance(out["id"], str) and out["id"]
    assert {t["name"] for t in out["outputs"]} == {"entities", "ungrounded", "parse_error"}


@pytest.mark.parametrize("body,param", [
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Ada"]}]}, "inputs"),
    (v2(labels="not json"), "inputs[labels].data[0]"),
    (v2(labels='["person", 5]'), "inputs[labels].data[0]"),
    (v2(labels="[]"), "inputs[labels].data[0]"),
    (v2(texts=("",)), "inputs[text].data[0]"),
    ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["Ada"]},
                 {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["person"]']}]}, "inputs[text].shape"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "INT64", "data": [1]},
                 {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["person"]']}]}, "inputs[0].datatype"),
    ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["Ada", "Bob"]},
                 {"name": "labels", "shape": [3], "datatype": "BYTES", "data": ['["a"]'] * 3}]}, "inputs[labels].data"),
    ({"inputs": [{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["x"]},
                 {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["a"]']}]}, "inputs[0]"),
    (v2(extra=[{"name": "return_reasoning", "shape": [1], "datatype": "BOOL", "data": ["yes"]}]), "inputs[2].data[0]"),
    (v2(extra=[{"name": "max_reasoning_tokens", "shape": [1], "datatype": "INT64", "data": [2.5]}]), "inputs[2].data[0]"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Ada"]},
                 {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Bob"]}]}, "inputs[text]"),
])
def test_v2_bad_tensors_get_400_naming_the_tensor(client, body, param) -> None:
    resp = client.post(INFER, json=body)  # OIP: 400 and {"error": "<param>: <message>"} (test_serving_oip.py)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith(param), resp.json()


def test_v2_unknown_model_is_404(client) -> None:
    resp = client.post("/v2/models/nope/infer", json=v2())
    assert resp.status_code == 404 and resp.json()["error"].startswith("model_name"), resp.text


def test_health_readiness_and_metadata(client) -> None:
    assert client.get("/").json() == {"status": "alive"}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v1/models/{NAME}").json() == {"name": NAME, "ready": True}
    assert client.get(f"/v2/models/{NAME}/ready").json()["ready"] is True
    meta = client.get(f"/v2/models/{NAME}").json()
    assert [t["name"] for t in meta["inputs"]] == ["text", "labels", "return_reasoning", "max_reasoning_tokens"]
    assert {t["name"] for t in meta["outputs"]} >= {"entities", "parse_error"}
    assert client.get("/v2/models/nope").status_code == 404
    assert client.post(f"/v1/models/{NAME}:explain", json=v1()).status_code in (404, 405)  # removed, not a 501
    assert client.post(f"/v2/repository/models/{NAME}/unload").status_code == 404  # not exposed


def test_openapi_publishes_the_typed_bodies(client) -> None:
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/v1/models/{model_name}:predict"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    schemas = spec["components"]["schemas"]
    instances = schemas[ref]["properties"]["instances"]
    assert instances["maxItems"] == 4
    inst = schemas[instances["items"]["$ref"].rsplit("/", 1)[-1]]
    assert inst["properties"]["text"]["maxLength"] == 200 and inst["additionalProperties"] is False
    assert {"200", "400", "404", "413", "503", "504"} <= set(op["responses"]) and "422" not in op["responses"]
    assert "requestBody" in spec["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert "/openai/v1/chat/completions" in spec["paths"]
    assert "/v1/models/{model_name}:explain" not in spec["paths"]


# ------------------------------------------------------------------------------------- OpenAI


def chat(**kw) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, **kw}


def test_openai_chat_and_models(client) -> None:
    out = client.post("/openai/v1/chat/completions", json=chat()).json()
    assert out["object"] == "chat.completion" and out["model"] == NAME
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert out["usage"]["completion_tokens"] <= 4
    models = client.get("/openai/v1/models").json()
    assert [m["id"] for m in models["data"]] == [NAME]


def test_openai_stream_matches_the_non_streamed_answer(client) -> None:
    whole = client.post("/openai/v1/chat/completions", json=chat(max_tokens=6)).json()["choices"][0]["message"]
    with client.stream("POST", "/openai/v1/chat/completions",
                       json=chat(max_tokens=6, stream=True, stream_options={"include_usage": True})) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in resp.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[len("data: "):]) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks if c["choices"])
    assert text == (whole["content"] or "") and reasoning == (whole["reasoning_content"] or "")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 6
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("body,status,param", [
    (chat(model="gpt-4"), 404, "model"),
    (chat(n=17), 400, "n"),
    (chat(messages=[]), 400, "messages"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role"),
    (chat(temperature=5), 400, "temperature"),
    (chat(max_tokens=0), 400, "max_tokens"),
])
def test_openai_errors_name_the_field(client, body, status, param) -> None:
    assert_error(client.post("/openai/v1/chat/completions", json=body), status, param)


def test_reasoning_splitter_streams_like_vllms_parser() -> None:
    text = "<think>\nAda is a person.\nBob\n\n is too.\n</think>\n{\"entities\": {}}"
    for step in (1, 2, 3, 7, len(text)):
        s = ReasoningSplitter()
        pieces = [p for i in range(0, len(text), step) for p in s.feed(text[i:i + step])] + s.flush()
        assert "".join(t for f, t in pieces if f == "reasoning_content") == "Ada is a person.\nBob\n\n is too."
        assert "".join(t for f, t in pieces if f == "content") == '{"entities": {}}'
    assert split_reasoning_text("plain answer") == (None, "plain answer")
    assert split_reasoning_text("<think>\nunfinished") == ("unfinished", "")


# ------------------------------------------------------------------------------------- budget


def test_effective_budget_is_the_smaller_cap() -> None:
    assert effective_budget(None, None) is None
    assert effective_budget(10, None) == 10 and effective_budget(None, 7) == 7 and effective_budget(10, 7) == 7


def test_budget_forces_the_close_and_a_second_generation(model) -> None:
    backend = model.backend
    prompt_text = render_prompt(TEXT, ["person"], "compact")

    async def run():
        capped = await generate_ner(backend, prompt_text, ["person"], max_new_tokens=8, max_answer_tokens=3, budget=3)
        zero = await generate_ner(backend, prompt_text, ["person"], max_new_tokens=8, max_answer_tokens=3, budget=0)
        free = await generate_ner(backend, prompt_text, ["person"], max_new_tokens=8, max_answer_tokens=3, budget=None)
        first = await backend.generate(GenRequest(chatml(prompt_text), 3, stop=("</think>",)))
        return capped, zero, free, first

    capped, zero, free, first = asyncio.run(run())
    # The random model never writes </think> within 3 tokens, so the close is forced after them.
    assert first.finish_reason == "length" and capped.capped and capped.calls == 2
    assert capped.reasoning_tokens == 3 and capped.text.startswith("<think>")
    assert "\n</think>\n" in capped.text and capped.completion_tokens <= 3 + 3
    assert zero.text.startswith("<think>\n\n</think>\n") and zero.reasoning_tokens == 0 and zero.capped
    assert not free.capped and free.calls == 1


def test_deployment_cap_applies_to_requests(model) -> None:
    with other_client(model, max_reasoning_tokens=2) as c:
        (pred,) = c.post(PREDICT, json=v1()).json()["predictions"]
        assert pred["reasoning_capped"] is True and pred["reasoning_tokens"] == 2
        (pred,) = c.post(PREDICT, json=v1(max_reasoning_tokens=1)).json()["predictions"]
        assert pred["reasoning_tokens"] == 1


# ------------------------------------------------------------------------------------- repair


def gen(text: str) -> NERGeneration:
    return NERGeneration(text=text, completion_tokens=10, reasoning_tokens=None, capped=False, calls=1)


def test_answers_are_grounded_and_repaired() -> None:
    labels = ["Person", "location"]
    pred = build_prediction(TEXT, labels, gen(
        '<think>\nAda and Alan are people.\n</think>\n{"entities": {"person": ["Ada Lovelace", "Alan Turing", "Grace", 7], '
        '"location": ["London"], "organization": ["ACME"]}}'), return_reasoning=True)
    assert [(e.text, e.label, e.start, e.end) for e in pred.entities] == [
        ("Ada Lovelace", "Person", 0, 12), ("Alan Turing", "Person", 17, 28), ("London", "location", 32, 38)]
    assert all(TEXT[e.start:e.end] == e.text for e in pred.entities)
    assert [(u.text, u.label) for u in pred.ungrounded] == [("Grace", "Person")]
    assert pred.parse_error is None and pred.reasoning == "Ada and Alan are people."
    assert any("organization" in r for r in pred.repairs)


def test_truncated_json_is_closed() -> None:
    pred = build_prediction(TEXT, ["person"], gen('{"entities": {"person": ["Ada Lovelace", "Alan Tur'), False)
    assert pred.parse_error is None and [e.text for e in pred.entities] == ["Ada Lovelace"]
    assert pred.repairs == ["closed a truncated JSON answer"]
    assert close_truncated_json('{"entities": {"person"') == '{"entities": {}}'
    assert close_truncated_json("no json here") is None


@pytest.mark.parametrize("garbage", ["", "TOKYOTOKYO", "<think>\nnever closed", '{"entities": ["a"]}', "{{{{", '{"x": 1}',
                                     "</think></think>", "\x00\ufffd"])
def test_garbage_gives_empty_entities_and_a_parse_error(garbage: str) -> None:
    pred = build_prediction(TEXT, ["person"], gen(garbage), return_reasoning=True)
    assert pred.entities == [] and pred.parse_error


def test_answer_schema_is_restricted_to_the_labels() -> None:
    schema = answer_json_schema(["person", "location", "musical artist", "a.b (c)"])
    entities = schema["properties"]["entities"]
    assert entities["additionalProperties"] is False and "properties" not in entities  # no imposed key order
    (pattern,) = entities["patternProperties"]
    for label in ("person", "location", "musical artist", "a.b (c)"):
        jsonschema.validate({"entities": {label: ["x"]}}, schema)
    for bad in ("date", "persons", "musical", "a-b (c)", "axb (c)", ""):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"entities": {bad: ["x"]}}, schema)
    jsonschema.validate({"entities": {"location": ["x"], "person": ["y"]}}, schema)  # either order


# ------------------------------------------------------------------------------------- batching


def test_dynamic_batching_batches_concurrent_requests_with_identical_greedy_output(model) -> None:
    backend: TransformersBackend = model.backend
    texts = [TEXT, "EU rejects German call to boycott British lamb .", "Peter Blackburn", "BRUSSELS 1996-08-22", "x"] * 3
    prompts = [chatml(render_prompt(t, ["person", "location"], "compact")) for t in texts]

    async def run():
        before = backend.batches
        together = await asyncio.gather(*(backend.generate(GenRequest(p, 4 + i % 4, stop=("</think>",) if i % 2 else ()))
                                          for i, p in enumerate(prompts)))
        batched_calls = backend.batches - before
        alone = [await backend.generate(GenRequest(p, 4 + i % 4, stop=("</think>",) if i % 2 else ()))
                 for i, p in enumerate(prompts)]
        return together, alone, batched_calls

    together, alone, calls = asyncio.run(run())
    assert calls <= 2  # 15 concurrent sequences, max_batch_size 32: one batch (two if the wait window split them)
    assert [(r.text, r.completion_tokens, r.finish_reason) for r in together] == \
        [(r.text, r.completion_tokens, r.finish_reason) for r in alone]


def test_streaming_deltas_add_up_to_the_result(model) -> None:
    backend = model.backend
    prompt = chatml(render_prompt(TEXT, ["person"], "compact"))

    async def run():
        plain = [e async for e in backend.stream(GenRequest(prompt, 8))]
        stopped = [e async for e in backend.stream(GenRequest(prompt, 8, stop=("zz",)))]
        return plain, stopped

    for events in asyncio.run(run()):
        final = events[-1]
        assert "".join(e for e in events[:-1]) == final.text


def test_a_full_queue_refuses_with_overloaded(tiny_dir) -> None:
    backend = TransformersBackend(str(tiny_dir), max_queue=2, max_batch_wait_ms=50)
    backend.load()

    async def run():
        prompt = chatml("hi")
        first = [asyncio.ensure_future(backend.generate(GenRequest(prompt, 2))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await backend.generate(GenRequest(prompt, 2))
        results = await asyncio.gather(*first)
        await backend.close()
        return results

    assert len(asyncio.run(run())) == 2


def test_chatml_rendering_matches_the_training_prompt() -> None:
    assert render_chatml([{"role": "user", "content": "hi"}]) == chatml("hi")
    two = render_chatml([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert two == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"


# ------------------------------------------------------------------------------------- metrics, settings


def test_metrics_are_exported_on_kserves_metrics_route(client) -> None:
    client.post(PREDICT, json=v1())
    client.post(PREDICT, json={"instances": []})
    text = client.get("/metrics").text
    for name in ("rner_http_requests_total", "rner_http_request_seconds_bucket", "rner_tokens_total",
                 "rner_parse_failures_total", "rner_batch_size_bucket", "rner_queue_depth", "rner_predict_calls_total",
                 "request_predict_seconds"):  # the last one is kserve's own
        assert name in text, name
    assert 'rner_http_requests_total{method="POST",route="/v1/models/{model_name}:predict",status="400"}' in text


def test_settings_from_config_env_and_overrides(monkeypatch) -> None:
    cfg = load_config(profile="tiny-cpu")
    monkeypatch.setenv("RNER_SERVE_MAX_LABELS", "9")
    monkeypatch.setenv("RNER_SERVE_MAX_REASONING_TOKENS", "128")
    s = settings_from_config(cfg, port=9000)
    assert s.prompt_style == "compact" and s.max_new_tokens == cfg.eval.max_new_tokens
    assert s.max_labels == 9 and s.max_reasoning_tokens == 128 and s.port == 9000 and s.host == "127.0.0.1"
    with pytest.raises(Exception, match="max_labels"):
        ServeSettings.from_sources(env={"RNER_SERVE_MAX_LABELS": "0"})
    # A config with a `serve` section: None there means "not set", fields the server does not know
    # (deployment-only settings) are left to their owners.
    section = SimpleNamespace(model_dump=lambda: {"max_labels": 7, "max_new_tokens": None, "replicas": 3})
    monkeypatch.delenv("RNER_SERVE_MAX_LABELS")
    s = settings_from_config(SimpleNamespace(prompt=cfg.prompt, eval=cfg.eval, serve=section))
    assert s.max_labels == 7 and s.max_new_tokens == cfg.eval.max_new_tokens
