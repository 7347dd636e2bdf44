"""The whole pipeline runs here: kfp.local (SubprocessRunner) at the `tiny-ci` size, then its deploy step.

As on a cluster: the data come from a git revision through the committed DVC `s3` remote (a real S3 HTTP
API on 127.0.0.1, reached with the S3 Secret's variables), every step from fetch to promote runs as its
own process on the artifacts the previous one wrote, the registry lives on S3, and the deploy step
(run by kfp.local too) patches the chart's InferenceService on a stub Kubernetes API server with the
registry copy the promotion made.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reasoning_ner.config import load_config
from tests.repo import commit, copy_project, dvc
from tests.s3 import s3_env

CFG = load_config(profile="tiny-ci")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, s3_server) -> dict:
    from pipelines.local import run_local

    with pytest.MonkeyPatch.context() as mp, s3_env(s3_server, mp):
        root = tmp_path_factory.mktemp("pipeline")
        repo = copy_project(root, data_dir)
        prepared = dvc(repo, "repro", "prepare")
        assert prepared.returncode == 0, prepared.stdout + prepared.stderr
        sha = commit(repo, "prepared data", "dvc.lock")
        s3_server.bucket(name="reasoning-ner")  # the bucket of the committed remote s3://reasoning-ner/dvc
        pushed = dvc(repo, "push", "-r", "s3", "work/data")
        assert pushed.returncode == 0, pushed.stdout + pushed.stderr
        clone = root / "clone"  # git only: the data can come from S3 alone
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        registry = f"s3://{s3_server.bucket()}/registry"
        summary = run_local(root / "work", profile="tiny-ci", repo=clone, revision=sha, dvc_remote="s3",
                            registry_uri=registry)
        return {"summary": summary, "sha": sha, "registry": registry, "run_dir": Path(summary["run_dir"])}


def _artifact(run_dir: Path, step: str, name: str) -> Path:
    (path,) = sorted(run_dir.glob(f"{step}*/{name}"))
    return path


def _metrics(run_dir: Path, step: str, name: str) -> dict:
    """A Metrics output: kfp.local keeps the logged values in the step's executor_output.json."""
    (out,) = sorted(run_dir.glob(f"{step}*/executor_output.json"))
    (artifact,) = json.loads(out.read_text())["artifacts"][name]["artifacts"]
    return artifact["metadata"]


def test_fetch_hands_the_data_of_the_revision_from_s3(run: dict) -> None:
    lineage = json.loads((_artifact(run["run_dir"], "fetch-data", "prepared") / "lineage.json").read_text())
    assert lineage["commit"] == run["sha"]
    assert lineage["remote"] == {"name": "s3", "url": "s3://reasoning-ner/dvc"}
    assert {f["path"].split("/")[1] for f in lineage["files"]} >= {"conll2003"}


def test_synthesis_and_validation_hand_the_capped_chains_on(run: dict) -> None:
    cot = _artifact(run["run_dir"], "synthesize-cot", "cot")
    stats = json.loads((cot / "stats.json").read_text())
    assert stats["records"] == CFG.cot.max_records_per_dataset and stats["accepted"] > 0
    summary = _metrics(run["run_dir"], "validate-data", "summary")
    assert summary["success"] in (True, 1.0) and summary["failed_expectations"] == 0
    assert summary["evaluated_expectations"] > 10
    assert (_artifact(run["run_dir"], "validate-data", "data_docs")).stat().st_size > 1000


def test_training_hands_models_in_hugging_face_format(run: dict) -> None:
    for step in ("train-sft", "train-grpo"):
        model = _artifact(run["run_dir"], step, "model")
        assert (model / "config.json").is_file() and list(model.glob("*.safetensors")), step
        assert (model / "README.md").is_file(), f"{step}: no model card"
    sft_card = (_artifact(run["run_dir"], "train-sft", "model") / "README.md").read_text()
    assert str(CFG.sft.max_steps) in sft_card


def test_evaluation_and_promotion_to_the_s3_registry(run: dict, s3) -> None:
    from reasoning_ner.promotion import Registry

    report = json.loads(_artifact(run["run_dir"], "evaluate-model", "report_json").read_text())
    supervised = report["suites"]["supervised"]["datasets"]
    assert all(ds["sentences"] == CFG.eval.limit for ds in supervised.values())
    assert run["summary"]["decision"] == "promoted"  # tiny-ci's gate has no floors: the first candidate wins
    champion = Registry(run["registry"]).champion()
    assert champion == run["summary"]["champion"]
    assert champion["model_uri"] == f"{run['registry']}/models/{champion['version']}"
    bucket, prefix = run["registry"][len("s3://"):].split("/", 1)
    copied = s3.keys(bucket, f"{prefix}/models/{champion['version']}/")
    grpo = _artifact(run["run_dir"], "train-grpo", "model")
    assert sorted(k.rsplit("/models/", 1)[1].split("/", 1)[1] for k in copied) == sorted(
        [*(p.relative_to(grpo).as_posix() for p in grpo.rglob("*") if p.is_file()), "drift_baseline.json"])


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_the_deploy_step_rolls_the_registry_copy_out(run: dict, s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster variant's last step, on the promote step's outputs, against a stub Kubernetes API server
    holding the chart's InferenceService (Standard mode, the chart's default, so the default canary_percent
    10 becomes a direct rollout)."""
    from kfp import local

    from components.deploy_model.component import deploy_model
    from reasoning_ner.k8s.manifests import overlay_settings
    from tests.test_deploy import FakeKServe

    champion = run["summary"]["champion"]
    settings = overlay_settings("base")
    with FakeKServe(settings) as fake:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": fake.url}}],
            "users": [{"name": "stub", "user": {"token": "stub-token"}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
        task = deploy_model(model_uri=champion["model_uri"], model_version=champion["version"],
                            namespace=settings.namespace, inference_service=settings.name, canary_percent=10)
    result = json.loads(task.output)
    assert result["action"] == "rolled-out" and any("canary_percent 10 ignored" in w for w in result["warnings"])
    (patch,) = fake.writes()
    assert patch["auth"] == "Bearer stub-token"
    assert patch["body"] == {"spec": {"predictor": {"model": {"storageUri": champion["model_uri"]}}},
                             "metadata": {"annotations": {"reasoning-ner.io/model-version": champion["version"]}}}
