"""The improvement loop end to end at the tiny-ci size: serve -> logged events -> harvest -> gate ->
refresh run -> promotion decision (issue 17).

A tiny-ci SFT champion is promoted into a registry with its real zero-shot evaluation, served in
process, and asked about CoNLL-2003 training sentences; each request and its response go to the
payload sink on 127.0.0.1 as the CloudEvents KServe's agent sends. The refresh pipeline then runs
under kfp.local against the stub OpenAI-compatible teacher on 127.0.0.1: the window check, the
harvest (re-annotation and the validation gate), the original data from the DVC-tracked repository,
the mix, SFT from the champion, evaluation with the held-out harvested slice, and the zero-shot
regression rule. A window without traffic ends the run early and promotes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from reasoning_ner.config import resolve_config
from reasoning_ner.cot.stub_teacher import StubTeacher
from reasoning_ner.flywheel.events import REQUEST_TYPE, RESPONSE_TYPE
from reasoning_ner.flywheel.sink import Sink, SinkSettings, create_app
from reasoning_ner.promotion import Registry, promote
from reasoning_ner.records import read_records
from tests.repo import commit, copy_project, dvc
from tests.serving_live import uvicorn_server
from tests.test_cot import running_stub

CFG = resolve_config(profile="tiny-ci")
SENTENCES = 16  # served CoNLL-2003 training sentences, four per request


def _champion(data: Path, work: Path) -> str:
    """A tiny-ci SFT model (a few steps on offline chains), as the main pipeline's SFT step makes one."""
    from reasoning_ner.cot.synthesize import synthesize
    from reasoning_ner.steps import base_model_path
    from reasoning_ner.training.sft import train_sft

    cfg = resolve_config(profile="tiny-ci", overrides=["sft.max_steps=8", "cot.max_records_per_dataset=64"])
    synthesize([data / "conll2003" / "train.jsonl"], work / "cot", cfg.cot, cfg.data.zero_shot_datasets, progress=False)
    base = base_model_path(cfg, "tiny", work, data)
    train_sft(cfg, [work / "cot" / "accepted.jsonl"], work / "sft", base_model=base, progress=False)
    return str(work / "sft" / "model")


def _promote_champion(model: str, data: Path, registry: Registry, work: Path) -> None:
    """The champion's registry record carries its real zero-shot metrics, which the refresh rule compares with."""
    from reasoning_ner.evaluation import evaluate
    from reasoning_ner.inference import make_engine

    engine = make_engine(model, CFG.eval.backend, CFG.eval.batch_size)
    report = evaluate(engine, CFG, ["zero-shot", "supervised"], data, work / "eval", model, {})
    assert promote(report, model, CFG.promotion, registry, version="champion-1").promoted


def _events(text_batches: list[list], client: TestClient, sink_url: str, now: str) -> None:
    """Each predict call's request and response, POSTed as KServe's agent logs them (binary CloudEvents)."""
    for batch in text_batches:
        body = {"instances": [{"text": r.text, "labels": r.schema} for r in batch]}
        answer = client.post("/v1/models/reasoning-ner:predict", json=body)
        assert answer.status_code == 200, answer.text
        event_id = str(uuid.uuid4())
        for kind, payload in (("request", json.dumps(body).encode()), ("response", answer.content)):
            headers = {"Content-Type": "application/json", "Ce-Specversion": "1.0", "Ce-Id": event_id,
                       "Ce-Type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
                       "Ce-Source": "http://localhost:9081/", "Ce-Time": now,
                       "Ce-Inferenceservicename": "reasoning-ner", "Ce-Namespace": "ner",
                       "Ce-Component": "transformer", "Ce-Endpoint": "default"}
            assert requests.post(sink_url, data=payload, headers=headers, timeout=30).status_code == 202


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict:
    from pipelines.refresh_local import run_refresh_local
    from reasoning_ner.serving import build_app, build_model, settings_from_config

    root = tmp_path_factory.mktemp("loop")
    repo = copy_project(root, data_dir)
    prepared = dvc(repo, "repro", "prepare")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    sha = commit(repo, "prepared data", "dvc.lock")
    pushed = dvc(repo, "push", "-r", "local", "work/data")  # the repository's own remote, .dvc-storage
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    storage = repo / ".dvc-storage"  # untracked: the fetch step's clone reads the data from this remote only
    data = repo / "work" / "data"

    registry = Registry(str(root / "registry"))
    champion = _champion(data, root / "champion")
    _promote_champion(champion, data, registry, root / "champion")

    train = read_records(data / "conll2003" / "train.jsonl")
    served = train[1000:1000 + SENTENCES]  # not among the synthesized originals' first records
    now = dt.datetime.now(dt.timezone.utc)
    log_root = root / "traffic"
    sink = Sink(SinkSettings(root=str(log_root), flush_records=1000))
    model = build_model(settings_from_config(CFG, max_new_tokens=48, torch_threads=1), champion)
    with TestClient(build_app(model)) as client, uvicorn_server(create_app(sink, tick_s=3600)) as sink_url:
        _events([served[i:i + 4] for i in range(0, SENTENCES, 4)], client, sink_url, now.isoformat(timespec="milliseconds"))
    # the sink flushed its parts on shutdown

    common = dict(profile="tiny-ci", repo=repo, revision=sha, dvc_remote=str(storage), registry_uri=registry.uri,
                  log_root=str(log_root), teacher_model="stub-teacher", max_records_per_dataset=64)
    with running_stub(StubTeacher(train, chain_style=CFG.cot.chain_style)) as teacher_url:
        empty = run_refresh_local(root / "empty", since="2020-01-06", until="2020-01-12", teacher_url=teacher_url, **common)
        after_empty = registry.champion()
        refresh = run_refresh_local(root / "refresh", since=now.date().isoformat(), until=now.date().isoformat(),
                                    teacher_url=teacher_url, **common)
    return {"registry": registry, "empty": empty, "after_empty": after_empty, "refresh": refresh, "served": served,
            "log_root": log_root, "day": now.date().isoformat()}


def _step_dir(summary: dict, step: str) -> list[Path]:
    return sorted(Path(summary["run_dir"]).glob(f"{step}*"))


def test_the_sink_wrote_the_served_traffic(loop: dict) -> None:
    records = [json.loads(line) for part in sorted((loop["log_root"] / f"date={loop['day']}").glob("*.jsonl"))
               for line in part.read_text().splitlines()]
    assert sorted(r["text"] for r in records) == sorted(r.text for r in loop["served"])
    assert all(r["component"] == "transformer" and "entities" in r for r in records)


def test_an_empty_window_ends_early_and_promotes_nothing(loop: dict) -> None:
    empty = loop["empty"]
    assert empty["decision"].startswith("skipped: empty window: no usable logged records")
    assert "2020-01-06..2020-01-12" in empty["decision"] and "champion champion-1 stays" in empty["decision"]
    assert loop["after_empty"]["version"] == "champion-1"
    for step in ("harvest-traffic", "train-sft", "evaluate-refresh", "promote-refresh"):
        assert not _step_dir(empty, step), f"{step} ran on an empty window"
    assert empty["report"] is None


def test_the_harvest_curated_the_logged_sentences(loop: dict) -> None:
    (harvest,) = _step_dir(loop["refresh"], "harvest-traffic")
    summary = json.loads((harvest / "cot" / "harvest.json").read_text())
    assert summary["distinct_sentences"] == len({r.text for r in loop["served"]}) and summary["gate"]["success"] is True
    assert summary["accepted"] > 0 and summary["window"] == {"since": loop["day"], "until": loop["day"]}
    (mix,) = _step_dir(loop["refresh"], "mix-cot-data")
    mixed = [json.loads(line) for line in (mix / "mixed" / "accepted.jsonl").read_text().splitlines()]
    harvested = [r for r in mixed if r["id"].startswith("traffic-")]
    assert len(harvested) == summary["accepted"]  # every harvested record ...
    assert {r["text"] for r in harvested} <= {r.text for r in loop["served"]}
    assert len(mixed) - len(harvested) == summary["accepted"]  # ... and as many originals (mix_ratio 1.0)


def test_the_refresh_trains_from_the_champion_and_reports_the_harvested_slice(loop: dict) -> None:
    refresh = loop["refresh"]
    (sft,) = _step_dir(refresh, "train-sft")
    assert (sft / "model" / "config.json").is_file()
    report = json.loads(Path(refresh["report_json"]).read_text())
    assert set(report["suites"]) >= {"zero-shot", "supervised"}
    harvest = json.loads((_step_dir(refresh, "harvest-traffic")[0] / "cot" / "harvest.json").read_text())
    if harvest["heldout"]:
        assert report["suites"]["harvested"]["sentences"] == harvest["heldout"]


def test_the_promotion_follows_the_zero_shot_regression_rule(loop: dict) -> None:
    registry, refresh = loop["registry"], loop["refresh"]
    report = json.loads(Path(refresh["report_json"]).read_text())
    candidate = report["suites"]["zero-shot"]["macro"][CFG.promotion.gate_metric]
    champion = registry.version("champion-1")["metrics"][f"zero-shot/{CFG.promotion.gate_metric}"]
    expected = "promoted" if champion - candidate <= CFG.promotion.zero_shot_tolerance else "refused"
    assert refresh["decision"] == expected
    (record,) = [registry.version(p.stem) for p in Path(registry.uri, "versions").glob("*.json") if p.stem != "champion-1"]
    reason = record["decision"]["reason"]
    assert f"zero-shot regression tolerance {CFG.promotion.zero_shot_tolerance}" in reason and "champion champion-1" in reason
    assert (registry.champion()["version"] == record["version"]) == (expected == "promoted")
