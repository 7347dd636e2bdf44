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
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT, ERROR = "result.json", "error.txt"
#: Keys of bench/sft_learning.py's train_recipe result that are paths.
PATH_KEYS = ("base_dir", "model_dir", "output_dir", "train_file")
#: How often the background looks at what the rest of the machine uses (seconds).
SHARE_PERIOD_S = 2.0
#: Other processes' CPU use, in cores, from which the background trains on one thread.
BUSY_CORES = 0.5


class CoreShare:
    """Train on every core while the rest of the machine is idle, on one thread while it is busy.

    An OpenMP team of two at nice 19 beside a busy foreground gets almost nothing done: the team's
    thread on the foreground's core waits for CPU and its partner waits for it at every barrier
    (bench/omp_contention.py: a niced pair takes longer than the two jobs one after the other). One
    thread on the idle core runs at its full speed. Called from SIGALRM, so the switch happens in the
    main thread, the one whose OpenMP setting torch's operators read; it counts seconds per setting.
    """

    def __init__(self, full: int) -> None:
        self.full = full
        self.seconds = {1: 0.0, full: 0.0}
        self.last = self.sample()

    @staticmethod
    def sample() -> tuple[float, float, float]:
        """(monotonic time, CPU seconds the machine was busy, CPU seconds of this process)."""
        with open("/proc/stat") as f:
            jiffies = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        busy = sum(jiffies) - jiffies[3] - jiffies[4]
        own = os.times()
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system

    def __call__(self, signum: int = 0, frame: Any = None) -> None:
        import torch

        now, busy, own = self.sample()
        then, busy0, own0 = self.last
        self.last = (now, busy, own)
        elapsed = max(now - then, 1e-3)
        threads = torch.get_num_threads()
        self.seconds[threads] = self.seconds.get(threads, 0.0) + elapsed
        others_cores = max(0.0, (busy - busy0) - (own - own0)) / elapsed
        torch.set_num_threads(1 if others_cores >= BUSY_CORES else self.full)

    def start(self) -> None:
        signal.signal(signal.SIGALRM, self)
        signal.setitimer(signal.ITIMER_REAL, SHARE_PERIOD_S, SHARE_PERIOD_S)

    def stop(self) -> dict[str, float]:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return {f"{threads}_threads": round(s, 1) for threads, s in self.seconds.items()}


def sft_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_sft_learning", REPO_ROOT / "bench" / "sft_learning.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def train(work: Path, data_dir: Path) -> dict[str, Any]:
    """Prepare the datasets and train the recipe; the result with paths as strings."""
    import torch

    from reasoning_ner.data.prepare import prepare

    share = CoreShare(torch.get_num_threads())
    share.start()
    try:
        prepared = work / "prepared"
        prepare("all", data_dir, prepared, progress=False)  # all: synthesis drops every evaluation sentence
        run = sft_bench().train_recipe(prepared, work / "sft-recipe", seed=0)
    finally:
        seconds_by_threads = share.stop()
    return {
        "seconds_by_threads": seconds_by_threads,
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
