"""The project as a new clone has it: its files (tracked, and new files git would add) in a fresh git
repository, with ../shared/data linked beside it as CI has it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                         capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f and (REPO_ROOT / f).is_file()]


def copy_project(root: Path, data_dir: Path) -> Path:
    """``root/repo``: the project's files committed in a new git repository; ``root/shared/data`` links the datasets."""
    repo = root / "repo"
    for rel in tracked_files():
        dest = repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / rel, dest)
    (root / "shared").mkdir()
    (root / "shared" / "data").symlink_to(data_dir)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    commit(repo, "copy")
    return repo


def commit(repo: Path, message: str, *paths: str) -> str:
    """Commit ``paths`` (default: everything) and return the new commit's sha."""
    subprocess.run([*GIT, "add", *(paths or ("-A",))], cwd=repo, check=True)
    subprocess.run([*GIT, "commit", "-qm", message, "--allow-empty"], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """`dvc ARGS` in ``repo`` with the venv's `rner` on PATH, reading ../shared/data as a fresh clone does."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RNER_DATA_DIR", None)
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
