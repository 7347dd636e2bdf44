"""What the ``submit_trainjob`` (SFT) and ``submit_grpo_trainjob`` pipeline steps do around their TrainJob,
all but the API calls.

Each step (``components/submit_trainjob``, ``components/submit_grpo_trainjob``) stages its inputs on the shared ReadWriteMany volume
(:func:`stage_inputs`), sizes the TrainJob from the step's parameters (:func:`step_settings`, then
:func:`.trainjob.build_trainjob`), lets ``components/submit_trainjob/trainjob_client.py`` create and
follow it (the only code that needs the Kubernetes client), and hands back what rank 0 wrote
(:func:`collect_model`). The overrides, metrics and report come from :mod:`reasoning_ner.steps`, as
the single-pod ``train_sft`` and ``train_grpo`` steps' do, so each pair can stand in for each other.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from .trainer_runtime import VLLM_POD_SUFFIX, VLLMRuntimeSettings
from .trainjob import Stage, TrainJobSettings, trainjob_name

#: The folder of the shared volume that holds one sub-folder per TrainJob.
SHARED_SUBDIR = "trainjobs"


@dataclass(frozen=True)
class SharedRun:
    """One TrainJob's folder on the shared volume: the same paths in the step and on every node."""

    name: str
    root: Path
    #: The training data staged under ``root/data`` (the CoT records, or GRPO's RL pool).
    data_files: tuple[Path, ...] = ()

    @property
    def sft_model_dir(self) -> Path:
        """GRPO's starting policy, copied from the step's input artifact."""
        return self.root / "sft-model"

    @property
    def lineage_file(self) -> Path:
        return self.root / "lineage.json"

    @property
    def output_dir(self) -> Path:
        return self.root / "out"

    def save(self, filename: str, obj: Any) -> None:
        """Keep ``obj`` as JSON next to the run (the TrainJob sent, the result seen) for debugging."""
        (self.root / filename).write_text(json.dumps(obj, indent=2, default=str))


def stage_inputs(shared_dir: str | Path, run_id: str, files: Mapping[str, str | Path], lineage: dict[str, Any], *,
                 stage: Stage = "sft", sft_model: str | Path | None = None) -> SharedRun:
    """Copy the training data (``files``: name under ``data/`` -> source), GRPO's SFT model and the
    lineage into the run's folder on the shared volume.

    The TrainJob (and so its folder) is named after the pipeline run id and the stage, so a retried
    step finds its own TrainJob again and one run's SFT and GRPO jobs do not collide; without a run
    id a random one is used. The name leaves room for the vLLM server role's pod suffix.
    """
    max_len = 63 - len(VLLM_POD_SUFFIX) if stage == "grpo" else 63
    name = trainjob_name(run_id or uuid.uuid4().hex[:12], prefix=f"rner-{stage}", max_len=max_len)
    root = Path(shared_dir) / SHARED_SUBDIR / name
    run = SharedRun(name=name, root=root, data_files=tuple(root / "data" / rel for rel in files))
    for rel, source in files.items():
        (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, root / "data" / rel)
    if sft_model is not None:
        shutil.copytree(sft_model, run.sft_model_dir, dirs_exist_ok=True)
    run.lineage_file.write_text(json.dumps(lineage, indent=2))
    return run


def step_settings(
    run: SharedRun,
    *,
    namespace: str,
    profile: str,
    base_model: str,
    overrides: list[str],
    num_nodes: int,
    gpus_per_node: int,
    runtime: str,
    launcher: str,
    shared_pvc: str,
    shared_dir: str,
    accelerator_type: str,
    node_selector: dict[str, str],
    tolerations: list[dict[str, Any]],
    timeout_hours: float,
    image_pull_secrets: list[str],
    image: str = "",
    stage: Stage = "sft",
    vllm: VLLMRuntimeSettings | None = None,
) -> TrainJobSettings:
    """The TrainJob's settings from the step's parameters; ``image`` empty = the train-gpu default.

    ``stage="grpo"`` starts from the staged SFT model (``base_model`` must be empty); ``vllm`` names
    the runtime with the server role (the chart's ``multiNode.grpoRuntime``), used when the run's
    rollouts come from a ``trl vllm-serve`` server of the job."""
    return TrainJobSettings(
        name=run.name, namespace=namespace, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
        runtime=runtime, launcher=launcher, profile=profile, data_files=[str(f) for f in run.data_files],
        output_dir=str(run.output_dir), base_model=base_model or None, overrides=overrides, stage=stage,
        model_dir=str(run.sft_model_dir) if stage == "grpo" else None, **({"vllm": vllm} if vllm else {}),
        lineage_file=str(run.lineage_file), shared_pvc=shared_pvc, shared_mount=shared_dir,
        accelerator_resource=accelerator_type, node_selector=dict(node_selector), tolerations=list(tolerations),
        active_deadline_seconds=max(1, int(timeout_hours * 3600)),
        # Per node, scaled like the single-pod GPU step (8 CPUs and 64 GB per GPU); /dev/shm a quarter.
        cpu_per_node=str(8 * gpus_per_node), memory_per_node=f"{64 * gpus_per_node}Gi",
        shm_size=f"{16 * gpus_per_node}Gi",
        labels={"reasoning-ner.io/trainjob": run.name},
        # The run's ServiceAccount gave the step its pull Secrets; the training image needs the same.
        image_pull_secrets=image_pull_secrets,
        **({"image": image} if image else {}),
    )


def collect_model(run: SharedRun, model_dir: str | Path, lineage: dict[str, Any]) -> dict[str, Any]:
    """Copy the model rank 0 exported into ``model_dir`` with its lineage; returns the training summary."""
    summary = json.loads((run.output_dir / "summary.json").read_text())
    shutil.copytree(run.output_dir / "model", model_dir, dirs_exist_ok=True)
    (Path(model_dir) / "lineage.json").write_text(json.dumps(lineage, indent=2))
    return summary
