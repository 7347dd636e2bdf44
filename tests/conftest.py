"""Shared fixtures: the real datasets in ../shared/data, prepared once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("RNER_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()
    if not (path / "README.md").is_file():
        pytest.fail(f"shared datasets not found at {path}; set RNER_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Every dataset prepared in the native format (about 6 s)."""
    from reasoning_ner.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare("all", data_dir, out, progress=False)
    return out
