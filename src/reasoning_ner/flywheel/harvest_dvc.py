"""A harvest's output as a new DVC-tracked dataset version: ``dvc add`` (and ``dvc push`` to the default remote).

DVC runs as a subprocess of the same interpreter (as ``make repro`` and the DVC tests run it) in the
DVC repository that holds the output folder, so its own configuration and credentials (remote,
``AWS_*`` variables) apply unchanged. The ``.dvc`` file it writes is what to commit to git.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


class DvcError(RuntimeError):
    """A DVC command failed; the message holds the command and DVC's own error output."""


def _dvc(repo: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    if done.returncode != 0 and not check:
        return ""
    if done.returncode != 0:
        raise DvcError(f"dvc {' '.join(args)} failed in {repo} (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
    return done.stdout.strip()


def dvc_root(path: Path) -> Path:
    """The DVC repository (a folder holding ``.dvc/``) that contains ``path``."""
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    raise DvcError(f"{path} is not inside a DVC repository (no .dvc/ folder above it); run `dvc init` there or drop --dvc")


def track(out_dir: Path, push: bool | None = None) -> dict[str, Any]:
    """``dvc add out_dir``; then ``dvc push`` of it when ``push`` is true, or (None) when a default remote is set."""
    import yaml

    repo = dvc_root(out_dir)
    rel = str(out_dir.resolve().relative_to(repo))
    _dvc(repo, "add", rel)
    dvc_file = repo / f"{rel}.dvc"
    out = yaml.safe_load(dvc_file.read_text())["outs"][0]
    # `dvc remote default` exits 1 when none is set: that means "do not push", not a failure.
    remote = _dvc(repo, "remote", "default", check=False) if push is not False else ""
    if push is None:
        push = bool(remote)
    if push:
        _dvc(repo, "push", f"{rel}.dvc")
    return {"dvc_file": str(dvc_file), "md5": out.get("md5"), "files": out.get("nfiles"), "size": out.get("size"),
            "pushed_to": (remote or None) if push else None}
