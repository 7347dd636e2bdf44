"""templates/job-register-pipeline.yaml: the post-install/post-upgrade Job that registers the
pipeline version, and its script (files/register_pipeline.py) run against a stub KFP v2beta1 API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import reasoning_ner
from pipelines.reasoning_ner_pipeline import COMPILED
from pipelines.submit import prepare_package
from reasoning_ner.images import content_version

from .chart_tools import CHART, template_objects, validate

TEMPLATE = "templates/job-register-pipeline.yaml"
SCRIPT = CHART / "files" / "register_pipeline.py"


def job(values=None) -> dict[str, Any]:
    (obj,) = template_objects(TEMPLATE, values)
    return obj


def env_of(obj) -> dict[str, str]:
    return {e["name"]: e["value"] for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}


# ------------------------------------------------------------------------------------ the Job


def test_hook_annotations() -> None:
    ann = job()["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"


def test_projected_kfp_token_and_no_api_token() -> None:
    spec = job()["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "reasoning-ner-registration"
    (token,) = [v for v in spec["volumes"] if v["name"] == "kfp-token"]
    assert token["projected"]["sources"] == [{"serviceAccountToken": {
        "path": "token", "audience": "pipelines.kubeflow.org", "expirationSeconds": 3600}}]
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["kfp-token"] + "/token" == env_of(job())["KFP_TOKEN_PATH"]
    assert {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v} == {
        "reasoning-ner-scripts", "reasoning-ner-pipeline"}


def test_environment() -> None:
    env = env_of(job())
    assert env["PIPELINE_VERSION"] == content_version(COMPILED.read_text()), "named by the registered content"
    assert env["PIPELINE_NAME"] == "reasoning-ner"
    assert env["KFP_HOST"] == "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
    assert env["KFP_NAMESPACE"] == ""  # standalone KFP: a shared pipeline
    multi = env_of(job({"kfp": {"multiUser": True, "namespace": "team-nlp"}}))
    assert multi["KFP_NAMESPACE"] == "team-nlp"
    shared = env_of(job({"kfp": {"multiUser": True, "namespace": "team-nlp"}, "pipeline": {"shared": True}}))
    assert shared["KFP_NAMESPACE"] == ""
    assert env_of(job({"pipeline": {"versionName": "pinned"}}))["PIPELINE_VERSION"] == "pinned"


def test_a_new_image_build_or_pipeline_is_a_new_version() -> None:
    """The Job's version follows the registered YAML: images.tag / digests change it, the same values
    keep it, and `rner pipeline submit` names the same content the same way."""
    digest = "sha256:" + "e" * 64
    build = {"images": {"tag": "sha-0123456789ab", "trainGpu": {"digest": digest}}}
    release, commit = env_of(job())["PIPELINE_VERSION"], env_of(job(build))["PIPELINE_VERSION"]
    assert release != commit and env_of(job(build))["PIPELINE_VERSION"] == commit
    content, name = prepare_package(COMPILED, tag="sha-0123456789ab", digests={"train-gpu": digest})
    assert commit == name == content_version(content)
    assert reasoning_ner.__version__ == commit.rsplit("-", 1)[0]


def test_pull_secrets_on_the_job_and_its_service_account() -> None:
    spec = job({"images": {"pullSecrets": ["ghcr-pull"]}})["spec"]["template"]["spec"]
    assert spec["imagePullSecrets"] == [{"name": "ghcr-pull"}]


def test_annotations_and_switch() -> None:
    obj = job({"pipeline": {"register": {"podAnnotations": {"sidecar.istio.io/inject": "false"}}}})
    assert obj["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}
    assert template_objects(TEMPLATE, {"pipeline": {"register": {"enabled": False}}}) == []


def test_valid() -> None:
    assert validate([job()]) == []


# ------------------------------------------------------------------------------------ the script


class FakeKFP:
    """Pipelines and versions in memory, answering like KFP's v2beta1 REST API."""

    def __init__(self, pipelines: dict[str, list[str]] | None = None, fail_first: int = 0, forbid: bool = False):
        self.pipelines = {name: {"id": f"pid-{name}", "versions": list(vs)} for name, vs in (pipelines or {}).items()}
        self.fail_first = fail_first
        self.forbid = forbid
        self.uploads: list[dict[str, Any]] = []

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        from urllib.parse import parse_qs, urlsplit

        if self.fail_first:
            self.fail_first -= 1
            return 503, {"error": "starting"}
        if self.forbid:
            return 403, {"error": "not authorized in namespace", "code": 7}
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        p = url.path
        if p == "/apis/v2beta1/healthz":
            return 200, {"multi_user": False}
        if p.startswith("/apis/v2beta1/pipelines/names/"):
            name = p.rsplit("/", 1)[1]
            if name in self.pipelines:
                return 200, {"pipeline_id": self.pipelines[name]["id"], "name": name}
            return 404, {"error": "not found", "code": 5}
        if p.endswith("/versions") and method == "GET":
            pid = p.split("/")[4]
            for pipe in self.pipelines.values():
                if pipe["id"] == pid:
                    return 200, {"pipeline_versions": [{"name": v, "pipeline_version_id": f"v-{v}"} for v in pipe["versions"]]}
            return 404, {}
        if p == "/apis/v2beta1/pipelines" and method == "POST":
            self.uploads.append({"kind": "pipeline", "query": query, "headers": headers, "body": body})
            name = json.loads(body)["name"]
            self.pipelines[name] = {"id": f"pid-{name}", "versions": []}
            return 200, {"pipeline_id": f"pid-{name}", "name": name}
        if p == "/apis/v2beta1/pipelines/upload" and method == "POST":
            self.uploads.append({"kind": "pipeline", "query": query, "headers": headers, "body": body})
            name = query["name"]
            self.pipelines[name] = {"id": f"pid-{name}", "versions": [name]}
            return 200, {"pipeline_id": f"pid-{name}", "name": name}
        if p == "/apis/v2beta1/pipelines/upload_version" and method == "POST":
            self.uploads.append({"kind": "version", "query": query, "headers": headers, "body": body})
            for pipe in self.pipelines.values():
                if pipe["id"] == query["pipelineid"]:
                    pipe["versions"].append(query["name"])
            return 200, {"pipeline_id": query["pipelineid"], "pipeline_version_id": f"v-{query['name']}"}
        return 404, {"error": f"no route {method} {p}"}


def run_script(server_url: str, tmp_path: Path, namespace: str = "", wait: str = "5",
               extra_env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    token = tmp_path / "token"
    token.write_text("projected-sa-token\n")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("# PIPELINE DEFINITION\npipelineInfo:\n  name: reasoning-ner\n")
    env = {"PATH": os.environ.get("PATH", ""), "KFP_HOST": server_url, "KFP_TOKEN_PATH": str(token),
           "KFP_NAMESPACE": namespace, "PIPELINE_FILE": str(pipeline), "PIPELINE_NAME": "reasoning-ner",
           "PIPELINE_DESCRIPTION": "ReasoningNER", "PIPELINE_VERSION": "0.1.0", "WAIT_SECONDS": wait,
           "QUIT_ISTIO_SIDECAR": "0", "RETRY_DELAY_SECONDS": "0.05", **(extra_env or {})}
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_first_install_uploads_pipeline_and_version(stub_server, tmp_path: Path) -> None:
    kfp = FakeKFP()
    server = stub_server(kfp)
    rc, out = run_script(server.url, tmp_path, namespace="team-nlp")
    assert rc == 0 and out["status"] == "registered" and out["created_pipeline"] is True
    pipe, version = kfp.uploads
    assert pipe["kind"] == "pipeline" and json.loads(pipe["body"]) == {
        "name": "reasoning-ner", "display_name": "reasoning-ner", "description": "ReasoningNER", "namespace": "team-nlp"}
    assert kfp.pipelines["reasoning-ner"]["versions"] == ["0.1.0"], "one version, named by content, no duplicate"
    assert version["query"] == {"name": "0.1.0", "display_name": "0.1.0", "pipelineid": "pid-reasoning-ner",
                                "description": "ReasoningNER"}
    assert b'name="uploadfile"' in version["body"] and b"pipelineInfo:" in version["body"]
    assert version["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert all(r["headers"]["authorization"] == "Bearer projected-sa-token" for r in server.requests)
    lookup = [r["path"] for r in server.requests if "/names/" in r["path"]][0]
    assert lookup == "/apis/v2beta1/pipelines/names/reasoning-ner?namespace=team-nlp"


def test_upgrade_adds_only_the_new_version(stub_server, tmp_path: Path) -> None:
    kfp = FakeKFP({"reasoning-ner": ["reasoning-ner", "0.0.9"]})
    rc, out = run_script(stub_server(kfp).url, tmp_path)
    assert rc == 0 and out["status"] == "registered" and out["created_pipeline"] is False
    assert [u["kind"] for u in kfp.uploads] == ["version"]


def test_rerun_is_idempotent(stub_server, tmp_path: Path) -> None:
    kfp = FakeKFP({"reasoning-ner": ["0.1.0"]})
    rc, out = run_script(stub_server(kfp).url, tmp_path)
    assert rc == 0 and out["status"] == "exists" and kfp.uploads == []


def test_unavailable_api_is_retried(stub_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kfp = FakeKFP(fail_first=1)
    rc, out = run_script(stub_server(kfp).url, tmp_path, wait="30")
    assert rc == 0 and out["status"] == "registered"


def test_forbidden_fails_with_the_reason(stub_server, tmp_path: Path) -> None:
    rc, out = run_script(stub_server(FakeKFP(forbid=True)).url, tmp_path)
    assert rc == 1 and out["status"] == "failed" and "HTTP 403" in out["error"]


def test_unreachable_api_fails_after_the_wait(tmp_path: Path) -> None:
    rc, out = run_script("http://127.0.0.1:9", tmp_path, wait="0")
    assert rc == 1 and "failed" in out["error"]


# ------------------------------------------------------------------------------------ the refresh pipeline


def test_refresh_environment_follows_the_values() -> None:
    from pipelines.refresh_pipeline import COMPILED as REFRESH

    env = env_of(job())
    assert env["REFRESH_PIPELINE_FILE"] == "/pipeline/refresh-pipeline.yaml"
    assert env["REFRESH_PIPELINE_NAME"] == "reasoning-ner-refresh"
    assert env["REFRESH_PIPELINE_VERSION"] == content_version(REFRESH.read_text())
    assert env["REFRESH_SCHEDULE"] == "" and json.loads(env["REFRESH_PARAMETERS"]) == {}
    assert env["REFRESH_SERVICE_ACCOUNT"] == "reasoning-ner-pipeline-runner"
    scheduled = env_of(job({"refresh": {"schedule": "0 3 * * 1", "parameters": {"lookback_days": 7, "teacher_url": "http://t/v1"}}}))
    assert scheduled["REFRESH_SCHEDULE"] == "0 3 * * 1"
    assert json.loads(scheduled["REFRESH_PARAMETERS"]) == {"lookback_days": 7, "teacher_url": "http://t/v1"}
    assert not [k for k in env_of(job({"refresh": {"enabled": False}})) if k.startswith("REFRESH_")]


def test_a_schedule_that_is_not_cron_is_refused_by_the_schema() -> None:
    with pytest.raises(Exception, match="schedule"):
        job({"refresh": {"schedule": "weekly"}})


class FakeKFPWithSchedules(FakeKFP):
    """FakeKFP plus experiments and recurring runs (v2beta1 field names, as kfp_server_api maps them)."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.experiments: dict[str, str] = {}
        self.recurring: dict[str, dict[str, Any]] = {}

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/apis/v2beta1/experiments":
            if method == "POST":
                name = json.loads(body)["display_name"]
                self.experiments[name] = f"eid-{name}"
                return 200, {"experiment_id": f"eid-{name}", "display_name": name}
            wanted = json.loads(query["filter"])["predicates"][0]["string_value"]
            found = [{"experiment_id": i, "display_name": n} for n, i in self.experiments.items() if n == wanted]
            return 200, {"experiments": found} if found else {}
        if url.path == "/apis/v2beta1/recurringruns":
            if method == "POST":
                run = {**json.loads(body), "recurring_run_id": f"rr-{len(self.recurring) + 1}"}
                self.recurring[run["recurring_run_id"]] = run
                return 200, run
            runs = [r for r in self.recurring.values() if r["experiment_id"] == query["experiment_id"]]
            return 200, {"recurringRuns": runs} if runs else {}
        if url.path.startswith("/apis/v2beta1/recurringruns/") and method == "DELETE":
            self.recurring.pop(url.path.rsplit("/", 1)[1])
            return 200, {}
        return super().__call__(method, path, headers, body)


def run_with_refresh(server_url: str, tmp_path: Path, schedule: str, version: str = "0.1.0-r1") -> tuple[int, dict[str, Any]]:
    refresh = tmp_path / "refresh-pipeline.yaml"
    refresh.write_text("# PIPELINE DEFINITION\npipelineInfo:\n  name: reasoning-ner-refresh\n")
    extra = {"REFRESH_PIPELINE_FILE": str(refresh), "REFRESH_PIPELINE_NAME": "reasoning-ner-refresh",
             "REFRESH_PIPELINE_VERSION": version, "REFRESH_SCHEDULE": schedule, "REFRESH_EXPERIMENT": "refresh",
             "REFRESH_PARAMETERS": json.dumps({"lookback_days": 7}), "REFRESH_MAX_CONCURRENCY": "1",
             "REFRESH_SERVICE_ACCOUNT": "reasoning-ner-pipeline-runner"}
    return run_script(server_url, tmp_path, extra_env=extra)


def test_the_refresh_pipeline_and_its_recurring_run_are_registered(stub_server, tmp_path: Path) -> None:
    kfp = FakeKFPWithSchedules()
    rc, out = run_with_refresh(stub_server(kfp).url, tmp_path, "0 3 * * 1")
    assert rc == 0, out
    assert kfp.pipelines["reasoning-ner-refresh"]["versions"] == ["0.1.0-r1"]
    (run,) = kfp.recurring.values()
    assert run["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}  # KFP's cron has seconds first
    assert run["pipeline_version_reference"] == {"pipeline_id": "pid-reasoning-ner-refresh",
                                                 "pipeline_version_id": "v-0.1.0-r1"}
    assert run["runtime_config"] == {"parameters": {"lookback_days": 7}} and run["no_catchup"] is True
    assert run["service_account"] == "reasoning-ner-pipeline-runner" and run["experiment_id"] == "eid-refresh"
    assert out["refresh"]["recurring_run"]["status"] == "scheduled"

    # An unchanged upgrade keeps it; a new version or cron replaces it (never two); no schedule removes it.
    rc, out = run_with_refresh(stub_server(kfp).url, tmp_path, "0 3 * * 1")
    assert out["refresh"]["recurring_run"]["status"] == "exists" and list(kfp.recurring) == ["rr-1"]
    rc, out = run_with_refresh(stub_server(kfp).url, tmp_path, "0 4 * * 1", version="0.1.0-r2")
    (run,) = kfp.recurring.values()
    assert run["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 1" and run["display_name"].endswith("0.1.0-r2")
    rc, out = run_with_refresh(stub_server(kfp).url, tmp_path, "")
    assert rc == 0 and kfp.recurring == {} and out["refresh"]["recurring_run"] == {"status": "none", "deleted": 1}


def test_a_bad_schedule_fails_the_job_with_the_value(stub_server, tmp_path: Path) -> None:
    rc, out = run_with_refresh(stub_server(FakeKFPWithSchedules()).url, tmp_path, "every monday")
    assert rc == 1 and "refresh.schedule 'every monday'" in out["error"]
