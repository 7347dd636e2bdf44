"""The project's own dvc.yaml: `dvc repro` on a fresh copy of the repository, then a no-op re-run; the
prepared data pushed to the committed `s3` remote (a real S3 HTTP API on 127.0.0.1) and fetched at
that git revision from a fresh clone, as the pipeline's first step does in a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.repo import commit, copy_project, dvc as _dvc


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The repository's files (as a clone would have them) in a new git repo, with ../shared/data beside it."""
    return copy_project(tmp_path_factory.mktemp("dvc"), data_dir)


@pytest.fixture(scope="module")
def reproduced(fresh_copy: Path) -> tuple[Path, str, str]:
    """`dvc repro` once, then dvc.lock committed: (repo, the repro's stdout, the data commit)."""
    first = _dvc(fresh_copy, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    return fresh_copy, first.stdout, commit(fresh_copy, "data", "dvc.lock")


@pytest.fixture(scope="module")
def first_stats(reproduced: tuple[Path, str, str]) -> dict:
    """The first repro's CoT stats, read before any test changes params.yaml (tests run in any order)."""
    return json.loads((reproduced[0] / "work" / "cot" / "stats.json").read_text())


def test_dvc_repro_on_a_fresh_copy_then_nothing_to_do(reproduced: tuple[Path, str, str], first_stats: dict) -> None:
    fresh_copy, first_stdout, _ = reproduced
    for stage in ("prepare", "synthesize", "validate"):
        assert f"Running stage '{stage}'" in first_stdout
    # The profile's data.train_datasets (tiny-cpu: CoNLL-2003), every sentence not also in an eval split.
    # 117 one-word sentences without an entity are too short a tagged chain (cot.min_chain_words).
    assert first_stats["accepted"] == 13370 and set(first_stats["by_dataset"]) == {"conll2003"}
    assert first_stats["rejections_by_reason"] == {"chain_too_short": 117}
    assert first_stats["dropped_eval_overlap"] == {"conll2003": 554}
    assert json.loads((fresh_copy / "work" / "validation" / "validation.json").read_text())["success"] is True
    assert (fresh_copy / "work" / "validation" / "data_docs" / "index.html").is_file()
    second = _dvc(fresh_copy, "repro")
    assert second.returncode == 0 and "Running stage" not in second.stdout
    assert _dvc(fresh_copy, "push").returncode == 0
    assert any((fresh_copy / ".dvc-storage").rglob("*"))


def test_prepared_data_pushed_to_s3_is_fetched_at_its_revision_from_a_fresh_clone(
        reproduced: tuple[Path, str, str], s3, tmp_path: Path) -> None:
    """The committed `s3` remote (s3://reasoning-ner/dvc; the endpoint comes from AWS_ENDPOINT_URL, as
    the chart's S3 Secret gives it to pods) is what the cluster pipeline's fetch step pulls from."""
    from reasoning_ner.lineage import read_lineage

    repo, _, sha = reproduced
    s3.bucket(name="reasoning-ner")
    push = _dvc(repo, "push", "-r", "s3", "work/data")
    assert push.returncode == 0, push.stdout + push.stderr
    assert any(k.startswith("dvc/files/md5/") for k in s3.keys("reasoning-ner", "dvc/"))
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    assert not (clone / "work").exists()  # nothing but git: the data can only come from S3
    out = tmp_path / "fetched"
    res = subprocess.run([str(Path(sys.executable).parent / "rner"), "data", "fetch", "--repo", str(clone), "--rev", sha,
                          "--path", "work/data", "--out", str(out), "--remote", "s3"],
                         capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"}, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    lineage = read_lineage(out)
    assert lineage["commit"] == sha and lineage["remote"] == {"name": "s3", "url": "s3://reasoning-ner/dvc"}
    assert {f["path"] for f in lineage["files"]} == {"data/" + p.relative_to(repo / "work" / "data").as_posix()
                                                     for p in (repo / "work" / "data").rglob("*") if p.is_file()}
    for f in lineage["files"]:  # the bytes are the ones the commit names
        assert (out / f["path"]).read_bytes() == (repo / "work" / f["path"]).read_bytes()


@pytest.mark.usefixtures("first_stats")  # read the first repro's stats before this test changes params.yaml
def test_changing_a_tracked_param_reruns_only_downstream(reproduced: tuple[Path, str, str]) -> None:
    fresh_copy = reproduced[0]
    params = fresh_copy / "params.yaml"
    params.write_text(params.read_text().replace("max_records_per_dataset: null", "max_records_per_dataset: 500"))
    out = _dvc(fresh_copy, "repro")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Running stage 'prepare'" not in out.stdout
    assert "Running stage 'synthesize'" in out.stdout and "Running stage 'validate'" in out.stdout
    assert json.loads((fresh_copy / "work" / "cot" / "stats.json").read_text())["records"] == 500  # tiny-cpu trains on CoNLL-2003 only
