"""The test session's trained SFT model, built in a background process while the other tests run.

Training it (bench/sft_learning.py's recipe, seed 0: the tiny-cpu profile as `make run` trains it) is
most of the suite's CPU time, and most other tests leave a core idle. So tests/conftest.py starts this
module once collection is over, if a selected test needs ``sft_model``, at the lowest CPU priority
(the foreground's timing-sensitive tests keep the cores they need), and the ``sft_model`` fixture
waits for the result file. The recipe runs in a process of its own, as the bench that measured it does.

Usage: ``python -m tests.sft_background <work dir> <shared data dir>``; writes ``<work dir>/result.json``
(or ``error.txt`` with the traceback).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT, ERROR = "result.json", "error.txt"
#: Keys of bench/sft_learning.py's train_recipe result that are paths.
PATH_KEYS = ("base_dir", "model_dir", "output_dir", "train_file")


def sft_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sft_learning", REPO_ROOT / "bench" / "sft_learning.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def train(work: Path, data_dir: Path) -> dict[str, Any]:
    """Prepare the datasets and train the recipe; the result with paths as strings."""
    from reasoning_ner.data.prepare import prepare

    prepared = work / "prepared"
    prepare("all", data_dir, prepared, progress=False)  # all: synthesis drops every evaluation sentence
    run = sft_bench().train_recipe(prepared, work / "sft-recipe", seed=0)
    return {
        **{k: run[k] for k in ("summary", "untrained", "trained", "generations", "seconds", "eval_generation_seconds")},
        **{k: str(run[k]) for k in PATH_KEYS},
        "cfg": run["cfg"].model_dump(mode="json"),
        "eval_records": [r.to_dict() for r in run["eval_records"]],
    }


def load_result(work: Path) -> dict[str, Any]:
    """The fixture's value: the bench's train_recipe result as the in-process call returns it."""
    from reasoning_ner.config import Config
    from reasoning_ner.records import NERRecord

    raw = json.loads((work / RESULT).read_text())
    return {**raw, **{k: Path(raw[k]) for k in PATH_KEYS}, "cfg": Config.model_validate(raw["cfg"]),
            "eval_records": [NERRecord.from_dict(r) for r in raw["eval_records"]]}


def main(argv: list[str]) -> int:
    work, data_dir = Path(argv[0]), Path(argv[1])
    os.nice(19)  # idle cores only: the foreground tests come first
    try:
        result = train(work, data_dir)
    except BaseException:
        (work / ERROR).write_text(traceback.format_exc())
        return 1
    tmp = work / f"{RESULT}.tmp"
    tmp.write_text(json.dumps(result))
    tmp.replace(work / RESULT)  # complete or absent
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
