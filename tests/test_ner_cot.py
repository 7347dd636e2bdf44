"""The paper's SFT data path: NER-CoT records imported (local file, folder, s3://), checked, held-out
sentences dropped, and read by the validation gate and SFT exactly as synthesized chains are.

The fixture below is written here in NER-CoT's format; no NER-CoT text is in the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reasoning_ner.cli import app
from reasoning_ner.config import ConfigError, load_config
from reasoning_ner.cot.ner_cot import import_ner_cot
from reasoning_ner.records import Entity, NERRecord, read_records, write_jsonl

from tests.s3 import s3_env

runner = CliRunner()

GOOD = [
    {"guid": 1, "sentence": "Marie Curie worked in Paris .", "schema": ["Person", "location", "date"],
     "cot": "Marie Curie is a person; Paris is a location.",
     "entities": [{"text": "Marie Curie", "label": "person"}, {"text": "Paris", "label": "location"}]},
    {"guid": 2, "sentence": "The Nile flows north .", "schema": ["river", "country"],
     "cot": "The Nile is a river.", "entities": [{"text": "Nile", "label": "river"}]},
    {"guid": 3, "sentence": "Nothing to see here .", "schema": ["person"],
     "cot": "No person is mentioned.", "entities": []},
]
BAD = [
    {"guid": 4, "schema": ["person"], "cot": "x y z", "entities": []},                       # no sentence
    {"guid": 5, "sentence": "Ada met Bob .", "schema": ["person"], "cot": "Ada and Bob are people.",
     "entities": [{"text": "Ada", "label": "person"}, {"text": "Bob", "label": "pet"}]},     # label outside the schema
    {"guid": 6, "sentence": "Ada met Bob .", "schema": ["person"], "cot": "Someone met someone.",
     "entities": [{"text": "Ada", "label": "person"}]},                                     # entity not in the chain
    {"guid": 7, "sentence": "Ada met Bob .", "schema": ["person"], "cot": "Carl is a person.",
     "entities": [{"text": "Carl", "label": "person"}]},                                    # span not in the sentence
    {"guid": 8, "sentence": "Ada met Bob .", "schema": ["person"], "cot": "",
     "entities": [{"text": "Ada", "label": "person"}]},                                     # no chain
]
HELD_OUT = [  # sentences of an evaluation split (supervised test, zero-shot test)
    {"guid": 9, "sentence": "Ada Lovelace wrote notes .", "schema": ["person"], "cot": "Ada Lovelace is a person.",
     "entities": [{"text": "Ada Lovelace", "label": "person"}]},
    {"guid": 10, "sentence": "films by  Nolan", "schema": ["director"], "cot": "Nolan directs.",
     "entities": [{"text": "Nolan", "label": "director"}]},
]


@pytest.fixture()
def eval_dir(tmp_path: Path) -> Path:
    data = tmp_path / "prepared"
    write_jsonl(data / "conll2003" / "test.jsonl", [
        NERRecord("c1", "Ada Lovelace wrote notes .", [Entity(0, 12, "person", "Ada Lovelace")], ["person"], "conll2003", "test")])
    write_jsonl(data / "mit_movie" / "test.jsonl", [
        NERRecord("m1", "films by Nolan", [Entity(9, 14, "director", "Nolan")], ["director"], "mit_movie", "test")])
    return data


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    return path


def test_import_checks_every_chain_and_drops_held_out_sentences(tmp_path: Path, eval_dir: Path) -> None:
    src = _jsonl(tmp_path / "ner-cot.jsonl", GOOD + BAD + HELD_OUT)
    out = tmp_path / "cot"
    stats = import_ner_cot(str(src), out, load_config().cot, sorted(eval_dir.glob("*/test.jsonl")), progress=False)
    assert (stats["accepted"], stats["rejected"]) == (3, 6)
    assert stats["dropped_eval_overlap"] == {"ner_cot": 2}
    assert stats["rejections_by_reason"] == {"malformed_record": 2, "label_outside_schema": 1, "entity_not_in_chain": 1,
                                            "span_not_in_sentence": 1, "chain_missing": 1}
    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert any("ner-cot.jsonl:11" in r["source"] and r["reasons"] == ["malformed_record"] for r in rejected)
    accepted = read_records(out / "accepted.jsonl")
    assert [r.id for r in accepted] == ["ner_cot-train-1", "ner_cot-train-2", "ner_cot-train-3"]
    curie = accepted[0]
    assert curie.cot.startswith("Marie Curie") and curie.schema == ["date", "location", "person"]
    assert [(e.start, e.end, e.label) for e in curie.entities] == [(0, 11, "person"), (22, 27, "location")]
    assert json.loads((out / "stats.json").read_text())["accepted"] == 3


def test_imported_chains_pass_the_gate_and_feed_sft(tmp_path: Path, eval_dir: Path) -> None:
    from reasoning_ner.training.sft_data import load_sft_records
    from reasoning_ner.validation import validate_dataset

    folder = tmp_path / "ner-cot"
    folder.mkdir()
    (folder / "part-1.json").write_text(json.dumps(GOOD[:2]))
    (folder / "part-2.jsonl").write_text(json.dumps(GOOD[2]) + "\n")
    out = tmp_path / "cot"
    import_ner_cot(str(folder), out, load_config().cot, sorted(eval_dir.glob("*/test.jsonl")), progress=False)
    cfg = load_config()
    report = validate_dataset([out / "accepted.jsonl"], sorted(eval_dir.glob("*/test.jsonl")), "cot",
                              cfg.data.zero_shot_datasets, tmp_path / "gate", data_docs=False)
    assert report.success, report.failed
    assert len(load_sft_records([out / "accepted.jsonl"], cfg)) == 3


def test_import_from_s3_and_the_cli(tmp_path: Path, eval_dir: Path, s3_server, monkeypatch: pytest.MonkeyPatch) -> None:
    with s3_env(s3_server, monkeypatch):
        bucket = s3_server.bucket("nercot")
        s3_server.client().put_object(Bucket=bucket, Key="data/ner-cot.json", Body=json.dumps(GOOD + BAD[1:2]).encode())
        res = runner.invoke(app, ["data", "import-ner-cot", f"s3://{bucket}/data/ner-cot.json", "--out", str(tmp_path / "cot"),
                                  "--eval-dir", str(eval_dir)])
        assert res.exit_code == 0, res.output
        assert "3 accepted, 1 rejected (rejections: label_outside_schema 1)" in res.output
        # the same import as stage 1 of DVC and the pipeline: `rner cot synthesize` with cot.sft_data ner-cot
        res = runner.invoke(app, ["--set", "cot.sft_data=ner-cot", "--set", f"cot.ner_cot_uri=s3://{bucket}/data/ner-cot.json",
                                  "cot", "synthesize", "--out", str(tmp_path / "cot2"), "--eval-dir", str(eval_dir)])
        assert res.exit_code == 0, res.output
        assert len(read_records(tmp_path / "cot2" / "accepted.jsonl")) == 3
    missing = runner.invoke(app, ["data", "import-ner-cot", str(tmp_path / "nope.json"), "--eval-dir", str(eval_dir)])
    assert missing.exit_code == 2 and "nope.json does not exist" in missing.output


def test_ner_cot_data_needs_a_source() -> None:
    with pytest.raises(ConfigError, match="cot.ner_cot_uri is not set"):
        load_config(overrides=["cot.sft_data=ner-cot"])
