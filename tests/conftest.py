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


def _bench(name: str):
    """A module of bench/: the learning checks re-run a seed that the bench measured, with its code."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def sft_bench():
    return _bench("sft_learning")


@pytest.fixture(scope="session")
def grpo_bench():
    return _bench("grpo_effects")


@pytest.fixture(scope="session")
def sft_model(tmp_path_factory: pytest.TempPathFactory, prepared_dir: Path, sft_bench) -> dict:
    """The tiny-cpu profile trained exactly as `make run` trains it (bench/sft_learning.py RECIPE,
    seed 0, a measured seed), with held-out scores before and after. Trained once per session
    (about 9 minutes on 2 cores); the SFT and GRPO learning checks share it.

    Keys: cfg, base_dir, model_dir, output_dir, train_file, eval_records, summary, untrained,
    trained, generations.
    """
    return sft_bench.train_recipe(prepared_dir, tmp_path_factory.mktemp("sft-recipe"), seed=0)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP API on 127.0.0.1 (moto), shared by the session; tests make their own buckets."""
    from tests.s3 import S3Server

    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch: pytest.MonkeyPatch):
    """The S3 server with its variables in this process's environment, as the chart's Secret sets them."""
    from tests.s3 import s3_env

    with s3_env(s3_server, monkeypatch):
        yield s3_server
