"""Run the pipeline locally through ``kfp.local`` (the project's main job, ``make run``).

The local variant has the same steps and component specs as the cluster pipeline, minus the
cluster-only operations (Kubernetes settings and the deploy step), which are skipped by design. Every step runs
as a subprocess with this interpreter (``SubprocessRunner(use_venv=False)``), so the installed
``reasoning_ner`` package is what runs, exactly as in the pipeline images.
"""

import json
import time
from pathlib import Path
from typing import Any

from pipelines.reasoning_ner_pipeline import local_pipeline, profile_arguments
from reasoning_ner.promotion import Registry

REPO_ROOT = Path(__file__).resolve().parents[1]


def _latest(root: Path, pattern: str) -> Path | None:
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run_local(work: Path, profile: str = "tiny-cpu", repo: Path = REPO_ROOT, **params: Any) -> dict[str, Any]:
    """Run the whole pipeline; returns where the report, the models and the registry are."""
    import warnings

    from kfp import local

    # The components name their cluster images; locally they run on this interpreter by design.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom", category=RuntimeWarning)
    work = work.resolve()
    root = work / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    params = {**profile_arguments(profile), "repo_url": str(repo.resolve()), "registry_uri": str(work / "registry"), **params}
    started = time.perf_counter()
    run = local_pipeline(**params)
    seconds = round(time.perf_counter() - started, 1)
    run_dir = _latest(root, "*/")
    summary = {
        "decision": run.output,
        "seconds": seconds,
        "run_dir": str(run_dir),
        "report": str(_latest(run_dir, "evaluate-model/report")) if run_dir else None,
        "report_json": str(_latest(run_dir, "evaluate-model/report_json")) if run_dir else None,
        "sft_model": str(_latest(run_dir, "train-sft/model")) if run_dir else None,
        "grpo_model": str(_latest(run_dir, "train-grpo/model")) if run_dir else None,
        "registry": params["registry_uri"],
    }
    summary["champion"] = Registry(params["registry_uri"]).champion()
    (work / "local_run.json").write_text(json.dumps(summary, indent=2))
    return summary
