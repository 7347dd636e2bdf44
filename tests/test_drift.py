"""Drift metrics (issue 17 "Watch"): the live counters of the NER service, the label cap and label
normalisation, the evaluation-time baseline and its way from evaluate through promotion (local and
S3 registries) to the server's baseline gauges, read from the server's real /metrics output.

The service runs with a stand-in backend that answers per sentence from a table (the model's text is
then parsed, repaired and grounded by the real code path); the evaluation with a scripted engine.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from reasoning_ner.config import PromotionSection, load_config
from reasoning_ner.evaluation import evaluate
from reasoning_ner.flywheel.baseline import (
    BASELINE_FILE,
    METRIC_LABEL_CHARS,
    baseline_from_counts,
    drift_counts,
    metric_label,
    read_baseline,
)
from reasoning_ner.inference import Generation
from reasoning_ner.prompt import render_prompt
from reasoning_ner.promotion import Registry, promote
from reasoning_ner.records import Entity, NERRecord, write_jsonl
from reasoning_ner.serving import ServeSettings, build_app, build_model
from reasoning_ner.serving.backends import Backend, GenRequest, GenResult
from reasoning_ner.serving.drift import OVERFLOW_LABEL
from tests.checks import sentence_of

NAME = "reasoning-ner"
PREDICT = f"/v1/models/{NAME}:predict"
INFER = f"/v2/models/{NAME}/infer"
LABELS = ["location", "organization", "person"]
ADA = "Ada met Bob in Paris ."
ACME = "ACME rose ."
REPLIES = {
    # Carl is not in the sentence: one ungrounded span
    ADA: '<think>person: Ada, Bob.</think>{"entities": {"person": ["Ada", "Bob", "Carl"], "location": ["Paris"]}}',
    ACME: "not json",
}


class TableBackend(Backend):
    """Stands in for the model: one scripted answer per sentence; ``model_dir`` as the in-process backend has."""

    kind = "table"

    def __init__(self, replies: dict[str, str], model_dir: str | None = None):
        self.replies = replies
        self.model_dir = model_dir

    async def generate(self, req: GenRequest) -> GenResult:
        return GenResult(self.replies.get(sentence_of(req.prompt), "garbage"), prompt_tokens=10, completion_tokens=5)


class TableEngine:
    """The evaluation's engine over the same table."""

    name = "table"

    def __init__(self, replies: dict[str, str]):
        self.replies = replies

    def generate(self, prompts, max_new_tokens):
        return [Generation(self.replies.get(sentence_of(p), "garbage"), 10, 5, 0.01) for p in prompts]


def settings(**kw) -> ServeSettings:
    base = dict(max_new_tokens=64, max_answer_tokens=32, prompt_style="compact", max_labels=8, max_instances=8,
                request_timeout_s=30)
    base.update(kw)
    return ServeSettings(**base)


def client_for(backend: Backend, **kw) -> TestClient:
    return TestClient(build_app(build_model(settings(**kw), backend=backend)))


def metrics(client: TestClient) -> dict[tuple[str, tuple], float]:
    """The server's /metrics, parsed as Prometheus parses it: (sample name, sorted labels) -> value."""
    resp = client.get("/metrics")
    assert resp.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: dict, name: str) -> dict[tuple, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def v1(*sentences: tuple[str, list[str]]) -> dict:
    return {"instances": [{"text": text, "labels": labels} for text, labels in sentences]}


# ------------------------------------------------------------------------------------ live counters


def test_counters_move_for_real_predictions_through_both_protocols() -> None:
    with client_for(TableBackend(REPLIES)) as client:
        before = metrics(client)
        resp = client.post(PREDICT, json=v1((ADA, ["Person", "location", "organization"]), (ACME, LABELS)))
        assert resp.status_code == 200, resp.text
        body = resp.json()["predictions"]
        assert [e["text"] for e in body[0]["entities"]] == ["Ada", "Bob", "Paris"] and body[1]["parse_error"]
        v2 = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [ADA]},
                         {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["person"]']}]}
        assert client.post(INFER, json=v2).status_code == 200
        after = metrics(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # "Person" and "person" are one series; three sentences asked for person, two for location
    assert delta("rner_drift_label_sentences_total", label="person") == 3
    assert delta("rner_drift_label_sentences_total", label="location") == 2
    assert delta("rner_drift_label_sentences_total", label="organization") == 2
    assert delta("rner_drift_label_entities_total", label="person") == 4  # Ada, Bob twice; Carl is ungrounded
    assert delta("rner_drift_label_entities_total", label="location") == 1  # the V2 request did not ask for it
    assert delta("rner_drift_label_entities_total", label="organization") == 0
    assert delta("rner_parse_failures_total") == 1 and delta("rner_ungrounded_spans_total") == 2
    prompts = [render_prompt(ADA, ["Person", "location", "organization"], "compact"), render_prompt(ACME, LABELS, "compact"),
               render_prompt(ADA, ["person"], "compact")]
    assert delta("rner_prompt_chars_count") == 3
    assert delta("rner_prompt_chars_sum") == pytest.approx(sum(len(p) for p in prompts))


def test_label_series_are_capped_and_the_rest_counts_as_overflow() -> None:
    labels = ["capone", "captwo", "capthree", "capfour"]
    with client_for(TableBackend({}), drift_max_labels=2) as client:
        before = metrics(client)
        assert client.post(PREDICT, json=v1(("x", labels[:3]), ("y", labels[1:]))).status_code == 200
        after = metrics(client)
    grown = {dict(k)["label"]: v - series(before, "rner_drift_label_sentences_total").get(k, 0.0)
             for k, v in series(after, "rner_drift_label_sentences_total").items()}
    grown = {k: v for k, v in grown.items() if v}
    # the first two labels seen keep their series; capthree and capfour share __other__ (3 sentence-labels)
    assert set(grown) == {"capone", "captwo", OVERFLOW_LABEL}
    assert grown["captwo"] == 2 and grown[OVERFLOW_LABEL] == 3


def test_hostile_label_values_are_normalised_and_keep_the_exposition_valid() -> None:
    assert metric_label("  Person_Name ") == "person name"
    assert metric_label("LOC\x00\x1b[31m") == "loc[31m"
    assert metric_label("\x00\x01") == "__empty__"
    assert len(metric_label("x" * 500)) == METRIC_LABEL_CHARS
    hostile = 'Evil"} 1\nrner_fake_total{a="' + "Z" * 60
    with client_for(TableBackend({}), max_label_chars=100) as client:
        resp = client.post(PREDICT, json=v1(("some text", [hostile, "ORG"])))
        assert resp.status_code == 200, resp.text
        after = metrics(client)  # parsing fails on a broken exposition
    names = {dict(k)["label"] for k in series(after, "rner_drift_label_sentences_total")}
    expected = metric_label(hostile)
    assert expected in names and "org" in names and len(expected) == METRIC_LABEL_CHARS
    assert expected == expected.lower() and "\n" not in expected
    assert not any(name.startswith("rner_fake") for name, _ in after)


# ------------------------------------------------------------------------------------ the baseline


def records() -> list[NERRecord]:
    return [
        NERRecord("c1", ADA, [Entity(0, 3, "person", "Ada"), Entity(8, 11, "person", "Bob"), Entity(15, 20, "location", "Paris")],
                  LABELS, "conll2003", "test"),
        NERRecord("c2", ACME, [Entity(0, 4, "organization", "ACME")], LABELS, "conll2003", "test"),
    ]


def test_baseline_from_hand_built_predictions() -> None:
    rows = [
        {"id": "c1", "entities": [{"text": "Ada", "label": "person", "start": 0, "end": 3},
                                  {"text": "Bob", "label": "Person", "start": 8, "end": 11},
                                  {"text": "Paris", "label": "location", "start": 15, "end": 20}],
         "ungrounded": [["Carl", "person"], ["Rome", "location"]], "parse_error": None},
        {"id": "c2", "entities": [], "ungrounded": [], "parse_error": "no JSON object"},
    ]
    other = [NERRecord("m1", "films by nolan", [], ["director"], "mit_movie", "test")]
    base = baseline_from_counts([drift_counts(records(), rows, "compact"),
                                 drift_counts(other, [{"id": "m1", "entities": [], "ungrounded": [], "parse_error": None}], "paper")])
    assert base["sentences"] == 3
    assert base["parse_error_rate"] == pytest.approx(1 / 3) and base["ungrounded_rate"] == pytest.approx(2 / 3)
    chars = [len(render_prompt(ADA, LABELS, "compact")), len(render_prompt(ACME, LABELS, "compact")),
             len(render_prompt("films by nolan", ["director"], "paper"))]
    assert base["prompt_chars_mean"] == pytest.approx(sum(chars) / 3)
    assert base["labels"] == {
        "director": {"sentences": 1, "entities": 0, "entity_rate": 0.0},
        "location": {"sentences": 2, "entities": 1, "entity_rate": 0.5},
        "organization": {"sentences": 2, "entities": 0, "entity_rate": 0.0},
        "person": {"sentences": 2, "entities": 2, "entity_rate": 1.0},
    }
    with pytest.raises(ValueError, match="'zz' has no evaluation record"):
        drift_counts(records(), [{"id": "zz"}], "compact")


def _prepared(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_jsonl(data / "conll2003" / "test.jsonl", records())
    return data


def evaluated(tmp_path: Path) -> dict:
    cfg = load_config(overrides=["eval.supervised_datasets=[conll2003]", "prompt.style=compact"])
    report = evaluate(TableEngine(REPLIES), cfg, ["supervised"], _prepared(tmp_path), tmp_path / "eval", "table-model", {})
    assert json.loads((tmp_path / "eval" / BASELINE_FILE).read_text()) == report["drift_baseline"]
    return report


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "candidate"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_the_baseline_travels_with_the_promoted_model_and_the_server_exports_it(tmp_path: Path) -> None:
    report = evaluated(tmp_path)
    base = report["drift_baseline"]
    assert base["parse_error_rate"] == 0.5 and base["ungrounded_rate"] == 0.5
    assert base["labels"]["person"]["entity_rate"] == 1.0 and base["labels"]["location"]["entity_rate"] == 0.5
    decision = promote(report, str(model_folder(tmp_path)), PromotionSection(gate_suite="supervised"), Registry(str(tmp_path / "registry")))
    assert decision.promoted
    served = Path(decision.model_uri)
    assert read_baseline(str(served / BASELINE_FILE)) == base
    with client_for(TableBackend(REPLIES, model_dir=str(served)), drift_max_labels=2) as client:
        samples = metrics(client)
    version = decision.version
    assert value(samples, "rner_drift_baseline_parse_error_rate", model_version=version) == 0.5
    assert value(samples, "rner_drift_baseline_ungrounded_rate", model_version=version) == 0.5
    assert value(samples, "rner_drift_baseline_prompt_chars", model_version=version) == pytest.approx(base["prompt_chars_mean"])
    # the cap holds for the baseline too: two labels (most asked first, then by name) get a series
    assert series(samples, "rner_drift_baseline_entity_rate") == {(("label", "location"),): 0.5,
                                                                   (("label", "organization"),): 0.0}


def test_a_baseline_on_s3_is_read_by_a_server_without_a_model_folder(s3, tmp_path: Path) -> None:
    """The cluster case: the NER service runs the remote backend and reads the champion's copy by URI."""
    report = evaluated(tmp_path)
    bucket = s3.bucket()
    decision = promote(report, str(model_folder(tmp_path)), PromotionSection(gate_suite="supervised"), Registry(f"s3://{bucket}/registry"))
    assert f"registry/models/{decision.version}/{BASELINE_FILE}" in s3.keys(bucket)
    with client_for(TableBackend(REPLIES), drift_baseline=f"{decision.model_uri}/{BASELINE_FILE}") as client:
        samples = metrics(client)
    assert series(samples, "rner_drift_baseline_entity_rate")[(("label", "person"),)] == 1.0


def test_the_charts_transformer_fetches_the_champions_baseline_with_kserves_storage_code(s3, tmp_path: Path) -> None:
    """serving.transformer.driftBaseline in a cluster: the rendered transformer's STORAGE_URI, downloaded by KServe's
    storage code (what its storage initializer runs) with the environment KServe injects, is the promoted model's
    baseline alone (not the weights), and the NER service started with the rendered RNER_SERVE_DRIFT_BASELINE
    (under the download folder instead of /mnt/models) exports it."""
    import os
    import subprocess
    import sys

    from reasoning_ner.k8s.kserve_credentials import storage_initializer_env
    from tests.helm.test_secret_s3 import serving_objects

    s3_server, bucket = s3, s3.bucket()
    report = evaluated(tmp_path)
    decision = promote(report, str(model_folder(tmp_path)), PromotionSection(gate_suite="supervised"),
                       Registry(f"s3://{bucket}/registry"))
    assert f"registry/models/{decision.version}/config.json" in s3.keys(bucket)  # the weights: not fetched
    values = {"serving": {"transformer": {"driftBaseline": True},
                          "storage": {"storageUri": decision.model_uri, "s3Endpoint": s3_server.host_port,
                                      "s3UseHttps": False, "s3VerifySsl": False, "s3Region": "us-east-1"}},
              "secrets": {"s3": {"create": True, "accessKeyId": s3_server.access_key_id,
                                 "secretAccessKey": s3_server.secret_access_key}}}
    sa, secrets, isvc = serving_objects(values)
    transformer = isvc["spec"]["transformer"]
    assert transformer["serviceAccountName"] == sa["metadata"]["name"]  # the storage initializer's credentials
    env = {e["name"]: e.get("value") for e in transformer["containers"][0]["env"]}
    out = tmp_path / "mnt-models"
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from kserve_storage import Storage; Storage.download(sys.argv[1], sys.argv[2])",
         env["STORAGE_URI"], str(out)],
        env={**storage_initializer_env(sa, secrets), "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
             "AWS_EC2_METADATA_DISABLED": "true", "S3_MAX_ATTEMPTS": "1"},
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in out.rglob("*") if p.is_file()] == [BASELINE_FILE]
    assert env["RNER_SERVE_DRIFT_BASELINE"].startswith("/mnt/models/")
    local = env["RNER_SERVE_DRIFT_BASELINE"].replace("/mnt/models", str(out), 1)
    with client_for(TableBackend(REPLIES), drift_baseline=local) as client:
        samples = metrics(client)
    assert list(series(samples, "rner_drift_baseline_parse_error_rate").values()) == [report["drift_baseline"]["parse_error_rate"]]
    assert series(samples, "rner_drift_baseline_entity_rate")[(("label", "person"),)] == 1.0


def test_no_baseline_file_means_no_baseline_series_and_a_log_line(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="reasoning_ner.serving.drift"):
        with client_for(TableBackend(REPLIES, model_dir=str(tmp_path))) as client:
            samples = metrics(client)
            assert client.post(PREDICT, json=v1((ADA, LABELS))).status_code == 200
    assert not any(name.startswith("rner_drift_baseline_") for name, _ in samples)
    assert f"no drift baseline at {tmp_path / BASELINE_FILE}" in caplog.text


def test_a_bad_baseline_file_is_named_and_ignored(tmp_path: Path, caplog) -> None:
    (tmp_path / BASELINE_FILE).write_text(json.dumps({"format_version": 1, "parse_error_rate": "high",
                                                      "ungrounded_rate": 0, "prompt_chars_mean": 10, "labels": {}}))
    with caplog.at_level(logging.ERROR, logger="reasoning_ner.serving.drift"):
        with client_for(TableBackend(REPLIES, model_dir=str(tmp_path))) as client:
            samples = metrics(client)
    assert not any(name.startswith("rner_drift_baseline_") for name, _ in samples)
    assert "drift baseline ignored" in caplog.text and "parse_error_rate must be a number" in caplog.text
    (tmp_path / BASELINE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"drift_baseline.json is not JSON"):
        read_baseline(str(tmp_path / BASELINE_FILE))
