"""Shared fixtures: the real datasets in ../shared/data, prepared once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


#: torch's intra-op thread count at start-up (one per core); see restore_torch_threads.
_TORCH_THREADS: dict[str, int] = {}


def pytest_configure(config: pytest.Config) -> None:
    import torch

    _TORCH_THREADS["default"] = torch.get_num_threads()


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """In-process servers set torch's thread count for the whole process (``serve.torch_threads=1``
    in the serving tests, as a one-core server pod would); put it back after each test, so a later
    test (the GRPO learning runs, the sessions' last and longest) does not run on one core."""
    yield
    import torch

    if torch.get_num_threads() != _TORCH_THREADS["default"]:
        torch.set_num_threads(_TORCH_THREADS["default"])


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


# ------------------------------------------------------------------ the trained model, in the background

SFT_FIXTURE = "sft_model"
_sft_training: dict[str, Any] = {}


def _needs_sft_model(item: pytest.Item) -> bool:
    return SFT_FIXTURE in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that use the trained model run last (a stable sort), so its training overlaps the rest."""
    items.sort(key=_needs_sft_model)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start training the session's SFT model (tests/sft_background.py) if a selected test needs it."""
    if not any(_needs_sft_model(item) for item in session.items) or session.config.option.collectonly:
        return
    work = session.config._tmp_path_factory.mktemp("sft-background")  # the session's basetemp, kept as usual
    data = Path(os.environ.get("RNER_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()
    log = (work / "log.txt").open("w")
    process = subprocess.Popen([sys.executable, "-m", "tests.sft_background", str(work), str(data)], cwd=REPO_ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
    _sft_training.update(process=process, work=work, log=log)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    process = _sft_training.get("process")
    if process is not None and process.poll() is None:  # e.g. the run was interrupted: do not leave it behind
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def sft_model(data_dir: Path) -> dict:  # data_dir: fails clearly when the datasets are missing
    """The tiny-cpu profile trained exactly as `make run` trains it (bench/sft_learning.py RECIPE,
    seed 0, a measured seed), with held-out scores before and after. Trained once per session
    (about 9 minutes on 2 cores) in a background process started after collection
    (tests/sft_background.py); the SFT, GRPO and serving checks share it.

    Keys: cfg, base_dir, model_dir, output_dir, train_file, eval_records, summary, untrained,
    trained, generations.
    """
    from tests.sft_background import ERROR, load_result

    assert _sft_training, "pytest_collection_finish starts the training for every selected test that uses sft_model"
    process, work = _sft_training["process"], _sft_training["work"]
    if process.wait() != 0:
        error = work / ERROR
        detail = error.read_text() if error.is_file() else (work / "log.txt").read_text()[-3000:]
        pytest.fail(f"training the session's SFT model failed (exit {process.returncode}):\n{detail}")
    return load_result(work)


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
