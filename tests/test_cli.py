"""The `rner` CLI end to end: in-process with typer's runner and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from reasoning_ner.cli import app

runner = CliRunner()
SMALL_MODEL = ["--set", "model.tiny.hidden_size=32", "--set", "model.tiny.intermediate_size=64",
               "--set", "model.tiny.num_hidden_layers=1", "--set", "model.tiny.vocab_size=400",
               "--set", "model.tiny.copy_circuit=false"]  # one layer cannot carry the circuit


def test_prepare_one_dataset(tmp_path: Path, data_dir: Path) -> None:
    res = runner.invoke(app, ["data", "prepare", "--dataset", "crossner_ai", "--source", str(data_dir), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "crossner_ai" in res.output and "431" in res.output
    assert (tmp_path / "crossner_ai" / "test.jsonl").is_file()
    assert json.loads((tmp_path / "prepare_summary.json").read_text())["datasets"]["crossner_ai"]["test"] == 431


def test_prepare_into_the_same_folder_keeps_earlier_datasets_in_the_summary(tmp_path: Path, data_dir: Path) -> None:
    for name in ("crossner_ai", "mit_restaurant"):
        res = runner.invoke(app, ["data", "prepare", "--dataset", name, "--source", str(data_dir), "--out", str(tmp_path)])
        assert res.exit_code == 0, res.output
    assert sorted(json.loads((tmp_path / "prepare_summary.json").read_text())["datasets"]) == ["crossner_ai", "mit_restaurant"]
    res = runner.invoke(app, ["data", "prepare", "--dataset", "mit_restaurant", "--format", "instructuie",
                              "--source", str(data_dir), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "prepare_summary.json").read_text())
    assert (summary["source_format"], sorted(summary["datasets"])) == ("instructuie", ["mit_restaurant"]), \
        "another source format starts a new summary"


def test_prepare_instructuie_format(tmp_path: Path, data_dir: Path) -> None:
    res = runner.invoke(app, ["data", "prepare", "--dataset", "mit_restaurant", "--format", "instructuie",
                              "--source", str(data_dir), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "mit_restaurant" / "stats.json").read_text())
    assert stats["source_format"] == "instructuie" and stats["splits"]["test"]["sentences"] == 1520


def test_prepare_errors_are_clear(tmp_path: Path, data_dir: Path) -> None:
    res = runner.invoke(app, ["data", "prepare", "--dataset", "conll2004", "--source", str(data_dir), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown dataset 'conll2004'" in res.output
    res = runner.invoke(app, ["data", "prepare", "--dataset", ",", "--source", str(data_dir), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no dataset named in ','" in res.output
    res = runner.invoke(app, ["data", "prepare", "--dataset", "mit_movie", "--format", "reference", "--source", str(data_dir),
                              "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--format 'reference': use native or instructuie" in res.output
    res = runner.invoke(app, ["data", "prepare", "--source", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["data", "prepare", "--dataset", "pile_ner", "--format", "instructuie",
                              "--source", str(data_dir), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no InstructUIE copy" in res.output


def test_eval_score_prints_and_writes_a_report(tmp_path: Path, prepared_dir: Path) -> None:
    gold = prepared_dir / "crossner_politics" / "test.jsonl"
    # A perfect prediction for every record, as raw outputs the parser must read.
    preds = tmp_path / "pred.jsonl"
    with open(gold) as g, open(preds, "w") as p:
        for line in g:
            rec = json.loads(line)
            grouped: dict[str, list[str]] = {}
            for e in rec["entities"]:
                grouped.setdefault(e["label"], []).append(e["text"])
            p.write(json.dumps({"id": rec["id"], "output": "<think>ok</think>" + json.dumps({"entities": grouped})}) + "\n")
    report_path = tmp_path / "report.json"
    res = runner.invoke(app, ["eval", "score", "--gold", str(gold), "--pred", str(preds), "--out", str(report_path)])
    assert res.exit_code == 0, res.output
    report = json.loads(report_path.read_text())
    ds = report["datasets"]["crossner_politics"]
    assert ds["paper"]["f1"] == 1.0 and ds["parse_rate"] == 1.0 and ds["ungrounded_rate"] == 0.0
    assert ds["strict"]["f1"] > 0.95  # the longest-span rule may drop a few nested gold spans
    res = runner.invoke(app, ["eval", "score", "--gold", str(gold), "--pred", str(tmp_path / "none.jsonl")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_init_tiny_via_cli(tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    res = runner.invoke(app, [*SMALL_MODEL, "model", "init-tiny", "--out", str(out), "--data-dir", str(tmp_path / "no-data")])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    res = runner.invoke(app, ["summary", "--work", str(tmp_path)])
    assert res.exit_code == 0 and "no prepared data" in res.output


def test_config_show_and_bad_override() -> None:
    res = runner.invoke(app, ["--profile", "qwen3-8b", "config", "show"])
    assert res.exit_code == 0 and "Qwen/Qwen3-8B-Base" in res.output
    res = runner.invoke(app, ["--set", "prompt.style=fancy", "config", "show"])
    assert res.exit_code == 2 and "prompt.style" in res.output


def test_config_show_output_is_a_config_file_at_any_width(tmp_path: Path) -> None:
    """Redirected output at the default 80 columns reads back as the same configuration (long values stay
    on one line)."""
    uri = "s3://" + "a-long-bucket/" * 8 + "model"
    res = runner.invoke(app, ["--set", f"deploy.serving.storage.storage_uri={uri}", "config", "show"],
                        env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    saved = tmp_path / "my.yaml"
    saved.write_text(res.stdout)
    again = runner.invoke(app, ["--config", str(saved), "config", "show"], env={"COLUMNS": "80"})
    assert again.exit_code == 0, again.output
    assert again.stdout == res.stdout and uri in again.stdout


def test_console_script_runs(tmp_path: Path, data_dir: Path) -> None:
    rner = Path(sys.executable).with_name("rner")
    proc = subprocess.run(
        [str(rner), "data", "prepare", "--dataset", "mit_movie", "--source", str(data_dir), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "mit_movie" in proc.stdout and "2443" in proc.stdout
