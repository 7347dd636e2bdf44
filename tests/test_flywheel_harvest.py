"""Curate (issue 17): `rner data harvest` turns logged traffic into a validated, versioned CoT training set.

Logged records are written by the sink's own code (events joined by ``records_from_pair``, parts written by
``RecordWriter``) into the S3 server on 127.0.0.1; the teacher is the stub OpenAI-compatible server on
127.0.0.1 answering from gold records this file writes; evaluation sentences come from the real datasets.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasoning_ner.cli import app
from reasoning_ner.config import resolve_config
from reasoning_ner.cot.stub_teacher import StubTeacher
from reasoning_ner.data.catalog import get_spec, iter_split
from reasoning_ner.flywheel.events import REQUEST_TYPE, RESPONSE_TYPE, parse_event, records_from_pair
from reasoning_ner.flywheel.harvest import EmptyWindowError, GateFailedError, HarvestError, harvest
from reasoning_ner.flywheel.harvest_read import Sentence
from reasoning_ner.flywheel.harvest_sample import select
from reasoning_ner.flywheel.sink import RecordWriter
from reasoning_ner.records import Entity, NERRecord, read_jsonl
from reasoning_ner.training.sft_data import load_sft_records
from tests.repo import GIT
from tests.test_cot import running_stub

DAY = dt.date(2026, 12, 1)
PLAIN = [
    ("Ada Lovelace visited London .", {"person": ["Ada Lovelace"], "location": ["London"]}),
    ("Siemens opened a plant in Berlin .", {"organization": ["Siemens"], "location": ["Berlin"]}),
    ("Grace Hopper joined the Navy .", {"person": ["Grace Hopper"], "organization": ["Navy"]}),
    ("Tokyo hosted the summit .", {"location": ["Tokyo"]}),
    ("Alan Turing studied at Cambridge .", {"person": ["Alan Turing"], "location": ["Cambridge"]}),
    ("Nokia hired Linus Torvalds .", {"organization": ["Nokia"], "person": ["Linus Torvalds"]}),
    ("The river flows through Vienna .", {"location": ["Vienna"]}),
    ("Edison founded General Electric .", {"person": ["Edison"], "organization": ["General Electric"]}),
]
LABELS = ["person", "location", "organization"]


def first_with_entities(dataset: str, data_dir: Path) -> NERRecord:
    return next(r for r in iter_split(get_spec(dataset), "test", data_dir) if r.entities)


def gold(text: str, spans: dict[str, list[str]]) -> NERRecord:
    entities = [Entity(text.index(s), text.index(s) + len(s), label, s) for label, ss in spans.items() for s in ss]
    return NERRecord(hashlib.md5(text.encode()).hexdigest()[:8], text, entities, LABELS, "fixture", "train")


def logged(event_id: str, day: dt.date, sentences: list[tuple[str, list[str]]], predictions: list[dict]) -> list[dict]:
    """Records as the sink makes them from one KServe request/response pair (V1 bodies)."""
    def headers(kind: str) -> dict[str, str]:
        return {"Ce-Specversion": "1.0", "Ce-Id": event_id, "Ce-Type": REQUEST_TYPE if kind == "req" else RESPONSE_TYPE,
                "Ce-Source": "http://localhost:9081/", "Ce-Time": f"{day.isoformat()}T10:00:00Z",
                "Ce-Inferenceservicename": "reasoning-ner", "Ce-Namespace": "ner", "Ce-Component": "transformer"}
    request = {"instances": [{"text": t, "labels": labels} for t, labels in sentences]}
    response = {"predictions": predictions}
    return records_from_pair(parse_event(headers("req"), json.dumps(request).encode()),
                             parse_event(headers("res"), json.dumps(response).encode()))


def served(text: str, spans: dict[str, list[str]], **extra) -> dict:
    ents = [{"text": s, "label": label, "start": text.index(s), "end": text.index(s) + len(s)} for label, ss in spans.items() for s in ss]
    return {"entities": ents, "ungrounded": [], "parse_error": None, **extra}


@pytest.fixture
def traffic(s3, data_dir: Path) -> dict:
    """One day of logged traffic in S3: plain sentences, duplicates, uncertain ones, evaluation sentences, bad lines."""
    import fsspec

    root = f"s3://{s3.bucket('traffic')}/logs"
    writer = RecordWriter(root)
    conll, crossner = first_with_entities("conll2003", data_dir), first_with_entities("crossner_ai", data_dir)
    for i, (text, spans) in enumerate(PLAIN):
        writer.add(logged(f"p{i}", DAY, [(text, LABELS)], [served(text, spans)]))
    dup_text, dup_spans = PLAIN[0]
    # the same sentence again, other case/spacing and label order, and a different served answer: one sentence, two samples
    writer.add(logged("dup", DAY, [("ada  lovelace visited LONDON .", ["location", "organization", "person"])],
                      [served("ada  lovelace visited LONDON .", {"organization": ["LONDON"]})]))
    writer.add(logged("u1", DAY, [("Marie Curie lived in Warsaw .", LABELS)],
                      [{"entities": [], "ungrounded": [], "parse_error": "no JSON object in the answer"}]))
    writer.add(logged("u2", DAY, [("Bach wrote in Leipzig .", LABELS)],
                      [served("Bach wrote in Leipzig .", {"person": ["Bach"]}, ungrounded=[{"text": "Lipsia", "label": "location"}])]))
    writer.add(logged("ev", DAY, [(conll.text, conll.schema), (crossner.text, crossner.schema)],
                      [served(conll.text, {}), served(crossner.text, {})]))
    writer.add(logged("late", DAY + dt.timedelta(days=3), [("Outside the window .", LABELS)], [served("Outside the window .", {})]))
    writer.flush()
    fs = fsspec.filesystem("s3")
    bad = [b"{not json", b"\xff\xfe\xfa", json.dumps({"text": "No labels here ."}).encode(),
           json.dumps({"labels": ["person"]}).encode(), json.dumps(["a", "list"]).encode(),
           json.dumps({"text": "word " * 1000, "labels": ["person"]}).encode()]  # over serve.max_text_chars
    fs.pipe(f"{root.removeprefix('s3://')}/date={DAY.isoformat()}/part-corrupt-000001.jsonl", b"\n".join(bad) + b"\n")
    golds = [gold(t, s) for t, s in PLAIN] + [gold("Marie Curie lived in Warsaw .", {"person": ["Marie Curie"], "location": ["Warsaw"]}),
                                               gold("Bach wrote in Leipzig .", {"person": ["Bach"], "location": ["Leipzig"]})]
    return {"root": root, "eval_texts": {conll.text, crossner.text}, "gold": golds, "dup": dup_text}


def config(tmp_path: Path, root: str, url: str | None, extra: tuple[str, ...] = (), **flywheel):
    overrides = [*extra, f"flywheel.log_root={root}", f"data.prepared_dir={tmp_path / 'no-prepared-data'}", "cot.concurrency=4"]
    overrides += ["cot.teacher=openai", f"cot.teacher_url={url}"] if url else []
    overrides += [f"flywheel.{k}={v}" for k, v in flywheel.items()]
    return resolve_config(profile="tiny-cpu", overrides=overrides)


def test_harvest_end_to_end(traffic: dict, tmp_path: Path) -> None:
    with running_stub(StubTeacher(traffic["gold"], chain_style="compact")) as url:
        cfg = config(tmp_path, traffic["root"], url, harvest_heldout_fraction=0.25)
        summary = harvest(cfg, since=DAY, until=DAY + dt.timedelta(days=1), out_dir=tmp_path / "out")
    out = tmp_path / "out"
    assert summary == json.loads((out / "harvest.json").read_text())
    # bad lines counted by reason, none of them fatal; the record three days later is outside the window
    assert summary["skipped"] == {"malformed_json": 1, "not_utf8": 1, "missing_labels": 1, "missing_text": 1, "not_an_object": 1,
                                  "text_too_long": 1}
    assert summary["records"] == 13
    # 13 records: the duplicate folds into its sentence, the two evaluation sentences are dropped
    assert summary["distinct_sentences"] == 12 and summary["dropped_eval_sentences"] == 2
    assert summary["uncertain_candidates"] == 3 and summary["selected_by_signal"] == {
        "low_agreement": 1, "parse_error": 1, "ungrounded": 1}
    accepted, heldout = list(read_jsonl(out / "accepted.jsonl")), list(read_jsonl(out / "heldout.jsonl"))
    rejected = list(read_jsonl(out / "rejected.jsonl"))
    texts = [r["text"] for r in accepted + heldout] + [r["record"]["text"] for r in rejected]
    assert len(texts) == summary["selected"] == 10 and not traffic["eval_texts"] & set(texts)
    assert sum(t.casefold().startswith("ada") for t in texts) == 1
    assert summary["heldout"] == len(heldout) == round(0.25 * (len(accepted) + len(heldout))) > 0
    assert not {r["id"] for r in heldout} & {r["id"] for r in accepted}
    assert all("cot" not in r and r["split"] == "test" for r in heldout)
    # no gold exists for traffic: nothing claims agreement with it
    assert all("gold_f1" not in r["meta"] and "served_f1" in r["meta"] for r in accepted)
    # the validation gate ran on the result
    assert summary["gate"] == {"success": True, "failed": []}
    assert json.loads((out / "validation" / "validation.json").read_text())["success"] is True
    # lineage names the window's parts by path, size and content hash
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["window"] == {"since": "2026-12-01", "until": "2026-12-02"} and lineage["log_root"] == traffic["root"]
    import fsspec

    fs = fsspec.filesystem("s3")
    assert len(lineage["parts"]) == 2
    for part in lineage["parts"]:
        assert part["path"].startswith(traffic["root"] + "/date=2026-12-01/")
        assert part["sha256"] == hashlib.sha256(fs.cat_file(part["path"])).hexdigest() and part["etag"]
    # the SFT step reads it unchanged
    records = load_sft_records([out / "accepted.jsonl"], cfg)
    assert len(records) == len(accepted) and all(r.cot for r in records)
    with pytest.raises(HarvestError, match="already holds a finished harvest"):
        harvest(cfg, since=DAY, until=DAY, out_dir=out)


def test_a_failing_gate_fails_the_harvest(traffic: dict, tmp_path: Path) -> None:
    """Declare the harvested dataset zero-shot: the gate's no_zero_shot_datasets_in_training check must stop it."""
    zero_shot = json.dumps([*resolve_config(profile="tiny-cpu").data.zero_shot_datasets, "traffic"])
    with running_stub(StubTeacher(traffic["gold"], chain_style="compact")) as url:
        cfg = config(tmp_path, traffic["root"], url, extra=(f"data.zero_shot_datasets={zero_shot}",))
        with pytest.raises(GateFailedError, match="no_zero_shot_datasets_in_training"):
            harvest(cfg, since=DAY, until=DAY, out_dir=tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "harvest.json").read_text())
    assert summary["gate"] == {"success": False, "failed": ["no_zero_shot_datasets_in_training"]}


def test_uncertain_first_then_rarest_label(tmp_path: Path) -> None:
    def sentence(i: int, labels: list[str], **sample) -> Sentence:
        return Sentence(f"k{i}", f"s{i}", labels, [{"entities": [], "ungrounded": [], "parse_error": None, **sample}])

    plain = [sentence(i, ["person"]) for i in range(8)] + [sentence(8, ["location"]), sentence(9, ["location"])]
    unsure = [sentence(10, ["person"], parse_error="bad"), sentence(11, ["person"], ungrounded=[{"text": "x"}])]
    two = Sentence("k12", "s12", ["person"], [{"entities": [{"text": "A", "label": "person"}]}, {"entities": []}])
    chosen, summary = select(plain + unsure + [two], budget=3, uncertain_share=1.0, min_agreement=0.5, seed=1)
    assert {s.key for s, _ in chosen} == {"k10", "k11", "k12"} and summary["selected_uncertain"] == 3
    chosen, _ = select(plain + unsure, budget=4, uncertain_share=0.0, min_agreement=0.5, seed=1)
    assert sum(s.labels == ["location"] for s, _ in chosen) == 2  # the rare type is not crowded out
    again, _ = select(plain + unsure, budget=4, uncertain_share=0.0, min_agreement=0.5, seed=1)
    assert [s.key for s, _ in again] == [s.key for s, _ in chosen]  # seeded


def test_offline_teacher_refused_and_empty_windows(traffic: dict, tmp_path: Path) -> None:
    with pytest.raises(HarvestError, match="offline teacher writes chains from gold"):
        harvest(config(tmp_path, traffic["root"], None), since=DAY, until=DAY, out_dir=tmp_path / "a")
    cfg = config(tmp_path, traffic["root"], "http://127.0.0.1:9/v1")
    with pytest.raises(EmptyWindowError, match="no usable logged records.*0 part file"):
        harvest(cfg, since=DAY - dt.timedelta(days=5), until=DAY - dt.timedelta(days=1), out_dir=tmp_path / "b")
    # a window whose only part is corrupt: the message says what was skipped
    import fsspec

    fsspec.filesystem("s3").pipe(f"{traffic['root'].removeprefix('s3://')}/date=2026-11-20/part-x.jsonl", b"{oops\n")
    with pytest.raises(EmptyWindowError, match="malformed_json 1"):
        harvest(cfg, since=dt.date(2026, 11, 20), until=dt.date(2026, 11, 20), out_dir=tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_cli_harvest_with_dvc_push_to_s3(traffic: dict, tmp_path: Path, s3) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    bucket = s3.bucket("dvc")
    for args in (["init", "-q"], ["remote", "add", "-d", "store", f"s3://{bucket}/dvc"]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    subprocess.run([*GIT, "commit", "-qam", "dvc"], cwd=repo, check=True)
    out = repo / "harvests" / "2026-12-01"
    runner = CliRunner()
    with running_stub(StubTeacher(traffic["gold"], chain_style="compact")) as url:
        base = ["--profile", "tiny-cpu", "--set", f"data.prepared_dir={tmp_path / 'none'}", "--set", "cot.concurrency=4",
                "data", "harvest", "--log-root", traffic["root"], "--teacher-url", url]
        result = runner.invoke(app, [*base, "--since", "2026-12-01", "--until", "2026-12-01", "--out", str(out), "--dvc"])
        assert result.exit_code == 0, result.output
        assert "sent to the teacher" in result.output and "pushed to remote store" in result.output
        empty = runner.invoke(app, [*base, "--since", "2026-10-01", "--until", "2026-10-02", "--out", str(tmp_path / "e")])
        assert empty.exit_code == 3 and "no usable logged records" in empty.output
        bad = runner.invoke(app, [*base, "--since", "2026-12-05", "--until", "2026-12-01", "--out", str(tmp_path / "f")])
        assert bad.exit_code == 2 and "before it starts" in bad.output
    assert (repo / "harvests" / "2026-12-01.dvc").is_file()
    assert "/2026-12-01" in (repo / "harvests" / ".gitignore").read_text().split()  # git tracks the .dvc file, DVC the data
    assert any(k.startswith("dvc/files/md5/") for k in s3.keys(bucket, "dvc/"))


def test_component_through_kfp_local(tmp_path: Path, data_dir: Path) -> None:
    """The harvest_traffic component run by kfp.local, its prepared input imported: the prepared data's evaluation
    sentence is dropped, the held-out slice and the metrics come out as their own artifacts."""
    from kfp import dsl, local
    from kfp.dsl import Dataset

    from components.harvest_traffic.component import harvest_traffic

    conll = first_with_entities("conll2003", data_dir)
    (tmp_path / "prepared" / "data" / "conll2003").mkdir(parents=True)
    (tmp_path / "prepared" / "data" / "conll2003" / "test.jsonl").write_text(json.dumps(conll.to_dict()) + "\n")
    writer = RecordWriter(str(tmp_path / "logs"))
    for i, (text, spans) in enumerate(PLAIN):
        writer.add(logged(f"p{i}", DAY, [(text, LABELS)], [served(text, spans)]))
    writer.add(logged("ev", DAY, [(conll.text, conll.schema)], [served(conll.text, {})]))
    writer.flush()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    with running_stub(StubTeacher([gold(t, s) for t, s in PLAIN], chain_style="compact")) as url:

        @dsl.pipeline(name="harvest-check")
        def check():  # no annotation: kfp reads a return annotation as an output
            prepared = dsl.importer(artifact_uri=str(tmp_path / "prepared"), artifact_class=Dataset, reimport=False)
            harvest_traffic(prepared=prepared.output, profile="tiny-cpu", log_root=str(tmp_path / "logs"), since="2026-12-01",
                            until="2026-12-01", budget=6, teacher_url=url, teacher_model="stub", judge_url=url,
                            judge_threshold=9.0)

        check()
    (summary,) = (tmp_path / "root").rglob("harvest.json")
    summary = json.loads(summary.read_text())
    assert summary["dropped_eval_sentences"] == 1 and summary["selected"] == 6 and summary["gate"]["success"]
    (heldout,) = [p for p in (tmp_path / "root").rglob("heldout.jsonl") if p.parent.name == "heldout"]
    assert len(list(read_jsonl(heldout))) == summary["heldout"] == round(0.1 * 6)
    assert not any(conll.text == r["text"] for p in (tmp_path / "root").rglob("*.jsonl") for r in read_jsonl(p))
