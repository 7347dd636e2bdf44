"""Inference backends, evaluation suites and report, promotion gate and registry."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasoning_ner.cli import app
from reasoning_ner.config import load_config
from reasoning_ner.evaluation import TABLE1, evaluate, sample_records
from reasoning_ner.inference import Generation, TransformersEngine, VLLMEngine, make_engine, predict, vllm_available
from reasoning_ner.modeling import init_tiny
from reasoning_ner.records import Entity, NERRecord, RecordError, read_records, write_jsonl
from tests.checks import sentence_of

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(overrides=["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
                                 "model.tiny.num_hidden_layers=1", "model.tiny.vocab_size=500",
                                 "model.tiny.copy_circuit=false"]).model.tiny
    out = tmp_path_factory.mktemp("tiny") / "model"
    init_tiny(out, cfg)
    return out


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> TransformersEngine:
    return TransformersEngine(str(tiny_dir), batch_size=4)


# ------------------------------------------------------------------------------------- backends


def test_batched_generation_equals_one_by_one(engine: TransformersEngine) -> None:
    prompts = ["<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\n[\"person\"]\nAda met Bob in a long sentence .<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"] * 2
    batched = engine.generate(prompts, 12)
    single = [engine.generate([p], 12)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(g.completion_tokens <= 12 and g.prompt_tokens > 0 for g in batched)
    assert {g.finish_reason for g in batched} <= {"stop", "length"}


def _install_vllm_stand_in(monkeypatch: pytest.MonkeyPatch, delegate: TransformersEngine, calls: dict) -> None:
    """A stand-in `vllm` module with vLLM's real call signatures, generating with transformers."""

    class SamplingParams:
        def __init__(self, n=1, temperature=1.0, top_p=1.0, max_tokens=16, stop=None, **kw):
            self.temperature, self.max_tokens, self.stop = temperature, max_tokens, stop

    class CompletionOutput:
        def __init__(self, text, token_ids, finish_reason):
            self.index, self.text, self.token_ids, self.finish_reason = 0, text, token_ids, finish_reason

    class RequestOutput:
        def __init__(self, prompt, prompt_token_ids, outputs):
            self.prompt, self.prompt_token_ids, self.outputs = prompt, prompt_token_ids, outputs

    class LLM:
        def __init__(self, model, tokenizer=None, tensor_parallel_size=1, dtype="auto", max_model_len=None,
                     gpu_memory_utilization=0.9, **kwargs):
            calls["init"] = {"model": model, "max_model_len": max_model_len, "tensor_parallel_size": tensor_parallel_size}

        def generate(self, prompts, sampling_params=None, use_tqdm=True, lora_request=None):
            calls["params"] = sampling_params
            assert sampling_params.stop == ["<|im_end|>"] and sampling_params.temperature == 0.0
            gens = delegate.generate(prompts, sampling_params.max_tokens)
            return [RequestOutput(p, list(range(g.prompt_tokens)),
                                  [CompletionOutput(g.text, list(range(g.completion_tokens)), g.finish_reason)])
                    for p, g in zip(prompts, gens)]

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)


def test_vllm_backend_against_a_stand_in_with_vllms_signatures(monkeypatch, engine: TransformersEngine, tiny_dir: Path) -> None:
    calls: dict = {}
    _install_vllm_stand_in(monkeypatch, engine, calls)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert vllm_available()
    chosen = make_engine(str(tiny_dir), "auto", max_model_len=2048)
    assert isinstance(chosen, VLLMEngine) and calls["init"]["max_model_len"] == 2048
    prompts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>user\nAda<|im_end|>\n<|im_start|>assistant\n"]
    via_vllm = chosen.generate(prompts, 10)
    assert [g.text for g in via_vllm] == [g.text for g in engine.generate(prompts, 10)]
    assert calls["params"].max_tokens == 10


def test_auto_backend_is_vllm_only_where_vllm_and_a_gpu_are(tiny_dir: Path) -> None:
    expected = VLLMEngine if vllm_available() else TransformersEngine
    assert type(make_engine(str(tiny_dir), "auto", batch_size=2)) is expected
    with pytest.raises(ValueError, match="unknown inference backend"):
        make_engine(str(tiny_dir), "tgi")


@pytest.mark.skipif(not vllm_available(), reason="needs vLLM and a GPU")
def test_real_vllm_matches_transformers(tiny_dir: Path, engine: TransformersEngine) -> None:  # pragma: no cover
    real = VLLMEngine(str(tiny_dir), max_model_len=512, gpu_memory_utilization=0.3)
    prompts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"]
    assert real.generate(prompts, 8)[0].text == engine.generate(prompts, 8)[0].text


# ------------------------------------------------------------------------------ suites and report


class ScriptedEngine:
    """Stands in for a model: replies per sentence from a hand-built table."""

    name = "scripted"

    def __init__(self, replies: dict[str, str]):
        self.replies = replies

    def generate(self, prompts, max_new_tokens):
        out = []
        for p in prompts:
            sentence = sentence_of(p)
            out.append(Generation(self.replies.get(sentence, "garbage"), 10, 5, 0.01))
        return out


def _prepared(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_jsonl(data / "conll2003" / "test.jsonl", [
        NERRecord("c1", "Ada met Bob in Paris .", [Entity(0, 3, "person", "Ada"), Entity(8, 11, "person", "Bob"),
                  Entity(15, 20, "location", "Paris")], ["location", "organization", "person"], "conll2003", "test"),
        NERRecord("c2", "ACME rose .", [Entity(0, 4, "organization", "ACME")], ["location", "organization", "person"], "conll2003", "test"),
    ])
    movie = [NERRecord("m1", "films by nolan", [Entity(9, 14, "director", "nolan")], ["actor", "director"], "mit_movie", "test")]
    write_jsonl(data / "mit_movie" / "test.jsonl", movie)
    write_jsonl(data / "mit_movie" / "reference-test.jsonl", movie)  # the zero-shot suite's file in parity mode
    return data


def test_suite_metrics_on_hand_built_predictions_and_report_files(tmp_path: Path) -> None:
    cfg = load_config(overrides=["data.zero_shot_datasets=[mit_movie]", "eval.supervised_datasets=[conll2003]"])
    engine = ScriptedEngine({
        "Ada met Bob in Paris .": '<think>person: Ada, Bob.</think>{"entities": {"person": ["Ada", "Bob", "Carl"], "location": ["Paris"]}}',
        "ACME rose .": "not json",
        "films by nolan": 'Here it is: {"entities": {"director": ["nolan"]}}',  # prose: the reference reads nothing
    })
    out = tmp_path / "eval"
    report = evaluate(engine, cfg, ["zero-shot", "supervised"], _prepared(tmp_path), out, "scripted-model", {"data": "v1"})
    conll = report["suites"]["supervised"]["datasets"]["conll2003"]
    # pred {ada, bob, carl, paris}, gold {ada, bob, paris, acme}: tp 3, pred 4, gold 4
    assert (conll["paper"]["tp"], conll["paper"]["pred"], conll["paper"]["gold"]) == (3, 4, 4)
    assert conll["paper"]["f1"] == pytest.approx(0.75)
    assert conll["strict"]["tp"] == 3 and conll["strict"]["pred"] == 3  # Carl is ungrounded
    assert conll["parse_rate"] == 0.5 and conll["ungrounded_rate"] == pytest.approx(0.25)
    assert conll["paper"]["per_label"]["organization"]["recall"] == 0.0
    assert report["suites"]["zero-shot"]["macro"]["paper_f1"] == 1.0
    assert report["suites"]["zero-shot"]["macro"]["parity_f1"] == 0.0, "parity mode parses as the reference"
    assert conll["parity"]["f1"] == pytest.approx(0.75) and report["suites"]["zero-shot"]["files"].startswith("reference")
    for name in ("report.json", "report.md", "report.html", "f1-zero-shot.png", "f1-supervised.png",
                 "labels-conll2003.png", "predictions-supervised.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "f1-supervised.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "scripted-model" in html
    md = (out / "report.md").read_text()
    assert "parity_f1: scored exactly as the ReasoningNER reference" in md and '"data": "v1"' in md
    assert f"{TABLE1['ReasoningNER-8B']['mit_movie']:.1f}" in md
    rows = [json.loads(line) for line in (out / "predictions-supervised.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"c1", "c2"} and rows[0]["entities"][0]["text"] == "Ada"


def test_each_prediction_is_parsed_and_grounded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite scores predict's rows as they are; scoring the raw outputs gives the same numbers."""
    import reasoning_ner.inference as inference
    import reasoning_ner.scoring as scoring

    calls = {"parse": 0, "ground": 0}

    def counted(name, fn):
        def wrapper(*a, **kw):
            calls[name] += 1
            return fn(*a, **kw)
        return wrapper

    for module in (inference, scoring):
        monkeypatch.setattr(module, "parse_answer", counted("parse", module.parse_answer))
        monkeypatch.setattr(module, "ground", counted("ground", module.ground))
    cfg = load_config(overrides=["data.zero_shot_datasets=[mit_movie]", "eval.supervised_datasets=[conll2003]"])
    engine = ScriptedEngine({
        "Ada met Bob in Paris .": '<think>x</think>{"entities": {"person": ["Ada", "Bob", "Carl"], "location": ["Paris"]}}',
        "ACME rose .": "not json",
        "films by nolan": '{"entities": {"director": ["nolan"]}}',
    })
    data = _prepared(tmp_path)
    report = evaluate(engine, cfg, ["supervised"], data, tmp_path / "eval", "scripted", {})
    assert calls == {"parse": 2, "ground": 2}, "one parse and one grounding per sentence"
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions-supervised.jsonl").read_text().splitlines()]
    gold = [r for r in read_records(data / "conll2003" / "test.jsonl")]
    from_raw = scoring.score_predictions(gold, {r["id"]: {"id": r["id"], "output": r["output"]} for r in rows})
    assert from_raw["datasets"]["conll2003"]["paper"] == report["suites"]["supervised"]["datasets"]["conll2003"]["paper"]
    assert from_raw["datasets"]["conll2003"]["strict"] == report["suites"]["supervised"]["datasets"]["conll2003"]["strict"]
    with pytest.raises(RecordError, match="'answer' must map labels"):
        scoring.score_predictions(gold, {"c1": {"id": "c1", "answer": ["Ada"], "parse_error": None, "entities": []}})


def test_sampling_is_deterministic() -> None:
    recs = [NERRecord(str(i), "t", [], [], "d", "s") for i in range(100)]
    a, b = sample_records(recs, 10, 7), sample_records(recs, 10, 7)
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 10
    assert [r.id for r in sample_records(recs, 10, 8)] != [r.id for r in a]
    assert sample_records(recs, None, 1) == recs


def test_predict_rows_carry_everything(engine: TransformersEngine) -> None:
    rec = NERRecord("r", "Ada met Bob .", [], ["person"], "conll2003", "test")
    (row,) = predict(engine, [rec], load_config().prompt, 6)
    assert set(row) >= {"id", "output", "answer", "entities", "ungrounded", "parse_error", "prompt_tokens",
                        "completion_tokens", "latency_s"}


def test_eval_cli_on_the_tiny_model(tmp_path: Path, tiny_dir: Path, prepared_dir: Path) -> None:
    out = tmp_path / "eval"
    res = runner.invoke(app, ["--set", "eval.max_new_tokens=4", "eval", "run", "--model", str(tiny_dir), "--suite", "zero-shot",
                              "--limit", "3", "--data-dir", str(prepared_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["suites"]["zero-shot"]["datasets"]) == set(load_config().data.zero_shot_datasets)
    assert all(ds["sentences"] == 3 for ds in report["suites"]["zero-shot"]["datasets"].values())
    res = runner.invoke(app, ["eval", "run", "--model", str(tmp_path / "nope"), "--limit", "1", "--data-dir", str(prepared_dir)])
    assert res.exit_code == 2 and "nope" in res.output


