"""The project's own dvc.yaml: `dvc repro` on a fresh copy of the repository, then a no-op re-run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                         capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and (REPO_ROOT / f).is_file()]


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The repository's files (as a clone would have them) in a new git repo, with ../shared/data beside it."""
    root = tmp_path_factory.mktemp("dvc")
    repo = root / "repo"
    for rel in _tracked_files():
        dest = repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dest)
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(data_dir)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=repo, check=True)
    return repo


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RNER_DATA_DIR", None)  # the stage reads ../shared/data, as on a fresh clone
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def test_dvc_repro_on_a_fresh_copy_then_nothing_to_do(fresh_copy: Path) -> None:
    first = _dvc(fresh_copy, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    for stage in ("prepare", "synthesize", "validate"):
        assert f"Running stage '{stage}'" in first.stdout
    stats = json.loads((fresh_copy / "work" / "cot" / "stats.json").read_text())
    # The profile's data.train_datasets (tiny-cpu: CoNLL-2003), every sentence not also in an eval split.
    assert stats["accepted"] == 13487 and set(stats["by_dataset"]) == {"conll2003"}
    assert stats["dropped_eval_overlap"] == {"conll2003": 554}
    assert json.loads((fresh_copy / "work" / "validation" / "validation.json").read_text())["success"] is True
    assert (fresh_copy / "work" / "validation" / "data_docs" / "index.html").is_file()
    second = _dvc(fresh_copy, "repro")
    assert second.returncode == 0 and "Running stage" not in second.stdout
    assert _dvc(fresh_copy, "push").returncode == 0
    assert any((fresh_copy / ".dvc-storage").rglob("*"))


def test_changing_a_tracked_param_reruns_only_downstream(fresh_copy: Path) -> None:
    params = fresh_copy / "params.yaml"
    params.write_text(params.read_text().replace("max_records_per_dataset: null", "max_records_per_dataset: 500"))
    out = _dvc(fresh_copy, "repro")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Running stage 'prepare'" not in out.stdout
    assert "Running stage 'synthesize'" in out.stdout and "Running stage 'validate'" in out.stdout
    assert json.loads((fresh_copy / "work" / "cot" / "stats.json").read_text())["records"] == 500  # tiny-cpu trains on CoNLL-2003 only
