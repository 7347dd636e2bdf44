"""Run the refresh pipeline locally through ``kfp.local`` (``rner pipeline run-local --variant refresh``).

As :mod:`pipelines.local`: every step is a subprocess of this interpreter. The registry must already
hold a champion (a main run, ``make run``, makes one) and the teacher must be an OpenAI-compatible
endpoint (``teacher_url``): logged traffic has no gold annotation for the offline teacher to explain.
"""

import json
import time
import warnings
from pathlib import Path
from typing import Any

from pipelines.local import REPO_ROOT, _latest
from pipelines.refresh_pipeline import refresh_arguments, refresh_local_pipeline
from reasoning_ner.promotion import Registry


def run_refresh_local(work: Path, profile: str = "tiny-cpu", repo: Path = REPO_ROOT, **params: Any) -> dict[str, Any]:
    """Run the refresh pipeline; returns the decision, the report and the registry's champion."""
    from kfp import local

    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom", category=RuntimeWarning)
    work = work.resolve()
    root = work / "refresh-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    params = {**refresh_arguments(profile), "repo_url": str(repo.resolve()), "registry_uri": str(work / "registry"),
              **params}
    started = time.perf_counter()
    run = refresh_local_pipeline(**params)
    run_dir = _latest(root, "*/")

    def output(pattern: str) -> str | None:  # None: the step did not run (an empty window skips it)
        found = _latest(run_dir, pattern) if run_dir else None
        return str(found) if found else None

    summary = {
        "decision": run.output,
        "seconds": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
        "report": output("evaluate-refresh/report"),
        "report_json": output("evaluate-refresh/report_json"),
        "sft_model": output("train-sft/model"),
        "registry": params["registry_uri"],
        "champion": Registry(params["registry_uri"]).champion(),
    }
    (work / "refresh_run.json").write_text(json.dumps(summary, indent=2))
    return summary
