"""The payload-logging sink (issue 17, capture): CloudEvents POSTed as KServe's agent sends them, to the
sink on 127.0.0.1, written as date-partitioned JSONL to the S3 server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import requests

from reasoning_ner.flywheel.events import REQUEST_TYPE, RESPONSE_TYPE, parse_event, records_from_pair
from reasoning_ner.flywheel.sink import RecordWriter, Sink, SinkSettings, create_app
from tests.s3 import s3_env
from tests.serving_live import uvicorn_server

TIME = "2026-12-05T09:30:00.123Z"


def headers(kind: str, event_id: str, **extra: str) -> dict[str, str]:
    """The binary-mode CloudEvent headers KServe's logger sets (pkg/logger/worker.go)."""
    return {
        "Content-Type": "application/json",
        "Ce-Specversion": "1.0",
        "Ce-Id": event_id,
        "Ce-Type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "Ce-Source": "http://localhost:9081/",
        "Ce-Time": TIME,
        "Ce-Inferenceservicename": "reasoning-ner",
        "Ce-Namespace": "ner",
        "Ce-Component": "transformer",
        "Ce-Endpoint": "default",
        **extra,
    }


V1_REQUEST = {"instances": [{"text": "Ada met Bob in Paris .", "labels": ["person", "location"]},
                            {"text": "ACME hired Carl .", "labels": ["organization", "person"]}]}
V1_RESPONSE = {"predictions": [
    {"entities": [{"text": "Ada", "label": "person", "start": 0, "end": 3}], "ungrounded": [], "parse_error": None},
    {"entities": [], "ungrounded": [{"text": "Karl", "label": "person"}], "parse_error": None}]}


def read_parts(fs, root: str) -> list[dict]:
    return [json.loads(line) for path in sorted(fs.glob(f"{root}/date=*/*.jsonl")) for line in fs.cat(path).decode().splitlines()]


def test_events_join_into_one_record_per_sentence() -> None:
    req = parse_event(headers("request", "e1"), json.dumps(V1_REQUEST).encode())
    res = parse_event(headers("response", "e1"), json.dumps(V1_RESPONSE).encode())
    records = records_from_pair(req, res)
    assert [r["text"] for r in records] == ["Ada met Bob in Paris .", "ACME hired Carl ."]
    assert records[0]["labels"] == ["person", "location"] and records[0]["entities"][0]["text"] == "Ada"
    assert records[1]["ungrounded"] == [{"text": "Karl", "label": "person"}]
    assert records[0]["service"] == "reasoning-ner" and records[0]["time"] == TIME and records[0]["id"] == "e1-0"
    # our V2 bodies (serving/schemas.py): one labels array for both sentences, per-sentence output tensors
    v2 = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["Ada met Bob .", "Hi ."]},
                     {"name": "labels", "shape": [1], "datatype": "BYTES", "data": ['["person"]']}]}
    v2_out = {"model_name": "reasoning-ner", "model_version": "v7", "outputs": [
        {"name": "entities", "shape": [2], "datatype": "BYTES",
         "data": [json.dumps([{"text": "Ada", "label": "person", "start": 0, "end": 3}]), "[]"]},
        {"name": "ungrounded", "shape": [2], "datatype": "BYTES", "data": ["[]", "[]"]},
        {"name": "parse_error", "shape": [2], "datatype": "BYTES", "data": ["", "no JSON object in the answer"]}]}
    first, second = records_from_pair(parse_event(headers("request", "e2"), json.dumps(v2).encode()),
                                      parse_event(headers("response", "e2"), json.dumps(v2_out).encode()))
    assert first["labels"] == second["labels"] == ["person"] and first["model_version"] == "v7"
    assert first["entities"][0]["end"] == 3 and first["parse_error"] is None
    assert second["parse_error"] == "no JSON object in the answer"


@pytest.mark.parametrize(("hdrs", "body", "reason"), [
    ({"Content-Type": "application/json"}, b"{}", "not_a_cloudevent"),
    (headers("request", "x", **{"Ce-Type": "dev.knative.foo"}), b"{}", "foreign_event_type"),
    (headers("request", ""), b"{}", "no_event_id"),
    (headers("request", "x"), b"\xff\xfe", "not_utf8"),
    (headers("request", "x"), b"{not json", "not_json"),
    (headers("request", "x"), b" " * (1 << 20) + b"{}", "body_too_large"),
])
def test_bad_posts_are_skipped_with_a_reason(hdrs, body, reason) -> None:
    assert parse_event(hdrs, body).reason == reason


def test_the_sink_over_http_writes_partitions_to_s3(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    with s3_env(s3_server, monkeypatch):
        bucket = s3_server.bucket("traffic")
        root = f"s3://{bucket}/logs"
        sink = Sink(SinkSettings(root=root, opt_out_labels=frozenset({"medical condition"}), flush_records=1000,
                                 flush_seconds=3600, pair_timeout_s=3600))
        with uvicorn_server(create_app(sink, tick_s=3600)) as url:
            ids = [str(uuid.uuid4()) for _ in range(3)]
            # the response may arrive first in the sink's eyes only as an orphan; KServe sends request first
            assert requests.post(url, data=json.dumps(V1_REQUEST), headers=headers("request", ids[0])).status_code == 202
            assert requests.post(url, data=json.dumps(V1_RESPONSE), headers=headers("response", ids[0])).status_code == 202
            opted = {"instances": [{"text": "Ada has flu .", "labels": ["person", "Medical Condition"]}]}
            requests.post(url, data=json.dumps(opted), headers=headers("request", ids[1]))
            requests.post(url, data=json.dumps({"predictions": [{"entities": []}]}), headers=headers("response", ids[1]))
            requests.post(url, data=json.dumps({"instances": [{"text": "no labels"}]}), headers=headers("request", ids[2]))
            requests.post(url, data=json.dumps({"predictions": [{}]}), headers=headers("response", ids[2]))
            requests.post(url, data=b"\xff", headers=headers("request", "bad"))
            requests.post(url, data=b"{}", headers=headers("response", "never-requested"))
            stats = requests.get(f"{url}/stats").json()
            assert requests.get(f"{url}/healthz").json() == {"status": "ok"}
        # shutdown flushed the buffer
        assert stats["events"] == 8 and stats["records"] == 2 and stats["opted_out"] == 1
        assert stats["skipped"] == {"no_labels": 1, "not_utf8": 1, "response_without_request": 1}
        import fsspec

        fs = fsspec.filesystem("s3")
        assert [p.rsplit("/", 2)[-2] for p in fs.glob(f"{bucket}/logs/date=*/*.jsonl")] == ["date=2026-12-05"]
        records = read_parts(fs, f"{bucket}/logs")
        assert [r["text"] for r in records] == ["Ada met Bob in Paris .", "ACME hired Carl ."]
        assert "Ada has flu ." not in json.dumps(records)


def test_unanswered_requests_and_request_only_mode(tmp_path) -> None:
    sink = Sink(SinkSettings(root=str(tmp_path / "logs"), pair_timeout_s=0.0, flush_records=1))
    sink.handle(headers("request", "late"), json.dumps(V1_REQUEST).encode())
    sink.tick()  # the response did not come in time: the sentences are kept, without predictions
    records = read_parts(sink.writer.fs, str(tmp_path / "logs"))
    assert len(records) == 2 and records[0]["entities"] == [] and sink.stats.skipped["response_missing"] == 1
    only = Sink(SinkSettings(root=str(tmp_path / "req"), expect_responses=False, flush_records=1))
    only.handle(headers("request", "r"), json.dumps(V1_REQUEST).encode())
    assert only.stats.records == 2 and not only.joiner.pending


def test_retention_deletes_old_partitions(tmp_path) -> None:
    writer = RecordWriter(str(tmp_path / "logs"))
    for day in ("2026-10-01", "2026-11-30", "2026-12-05"):
        writer.add([{"text": "x", "time": f"{day}T00:00:00Z"}])
    writer.flush()
    removed = writer.prune(30, today=dt.date(2026, 12, 5))
    assert removed == ["date=2026-10-01"]
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["date=2026-11-30", "date=2026-12-05"]
