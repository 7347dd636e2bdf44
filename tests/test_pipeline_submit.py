"""``rner pipeline submit``: the requests the real ``kfp.Client`` sends, captured by a stub KFP v2beta1 API on 127.0.0.1.

Also: the image references of the uploaded package are rewritten to a build's tag / digests, the
version is named after the uploaded content (an unchanged pipeline reuses its version), and the
backend's version (healthz ``tag_name``) is checked against MIN_KFP_BACKEND_VERSION first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.reasoning_ner_pipeline import COMPILED, PIPELINE_NAME
from pipelines.submit import (
    KFP_BACKEND_FEATURES,
    MIN_KFP_BACKEND_VERSION,
    SubmitError,
    Token,
    check_backend_version,
    normalize_cron,
    parse_digests,
    parse_params,
    pipeline_parameters,
    prepare_package,
    resolve_token,
    submit,
)
from reasoning_ner.images import content_version, image
from tests.stubs import Reply, StubAPIServer

API = "/apis/v2beta1"
TOKEN = "kfp-token-audience-pipelines.kubeflow.org"
NS = "team-ner"
SA = "reasoning-ner-runner"


class FakeKFP(StubAPIServer):
    """Just enough of the KFP v2beta1 REST API: healthz, pipelines (list, create, upload, upload_version,
    versions), experiments (list, create), runs and recurring runs (create). Records every request.
    healthz answers without a token, as KFP's HTTP mux serves it outside the authorizing gateway."""

    flat_query = True

    def __init__(self, pipelines: list[dict[str, Any]] | None = None, experiments: list[dict[str, Any]] | None = None,
                 multi_user: bool = True, require_token: str | None = None, kfp_version: str = "2.15.2"):
        self.require_token = require_token
        self.kfp_version = kfp_version
        self.pipelines = list(pipelines or [])
        self.experiments = list(experiments or [])
        self.versions: dict[str, list[dict[str, Any]]] = {p["pipeline_id"]: [] for p in self.pipelines}
        self.multi_user = multi_user
        super().__init__()

    def _denied(self, r: dict[str, Any]) -> bool:
        return bool(self.require_token) and r["auth"] != f"Bearer {self.require_token}"

    def route(self, r: dict[str, Any]) -> Reply:
        method, path, q, body = r["method"], r["path"], r["query"], r["body"]
        if method == "GET" and path == f"{API}/healthz":
            return 200, {"commit_sha": "0a1b2c3", "tag_name": self.kfp_version, "multi_user": self.multi_user}
        if self._denied(r):
            return 401, {"code": 16, "message": "Unauthenticated: token audience mismatch"}
        if method == "GET":
            if path == f"{API}/pipelines":
                name = json.loads(q["filter"])["predicates"][0]["stringValue"]
                hits = [p for p in self.pipelines if p["display_name"] == name]
                return 200, ({"pipelines": hits, "total_size": len(hits)} if hits else {})
            if path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
                pid = path.split("/")[-2]
                versions = sorted(self.versions.get(pid, []), key=lambda v: v["created_at"], reverse=True)
                if "filter" in q:
                    name = json.loads(q["filter"])["predicates"][0]["stringValue"]
                    versions = [v for v in versions if v["display_name"] == name]
                return 200, {"pipeline_versions": versions[: int(q.get("page_size", 10))], "total_size": len(versions)}
            if path == f"{API}/experiments":
                name = json.loads(q["filter"])["predicates"][0]["stringValue"]
                hits = [e for e in self.experiments
                        if e["display_name"] == name and e.get("namespace", "") == q.get("namespace", "")]
                return 200, ({"experiments": hits, "total_size": len(hits)} if hits else {})
        if method == "POST":
            if path == f"{API}/pipelines":
                pid = f"p-{len(self.pipelines) + 1}"
                p = {**body, "pipeline_id": pid, "created_at": "2026-11-25T10:00:00Z"}
                self.pipelines.append(p)
                self.versions[pid] = []
                return 200, p
            if path == f"{API}/pipelines/upload":
                pid = f"p-{len(self.pipelines) + 1}"
                p = {"pipeline_id": pid, "display_name": q["name"], "name": q["name"],
                     "namespace": q.get("namespace", ""), "created_at": "2026-11-25T10:00:00Z"}
                self.pipelines.append(p)
                self.versions[pid] = [{"pipeline_id": pid, "pipeline_version_id": f"{pid}-v1",
                                       "display_name": q["name"], "name": q["name"], "created_at": "2026-11-25T10:00:00Z"}]
                return 200, p
            if path == f"{API}/pipelines/upload_version":
                pid = q["pipelineid"]
                if any(v["display_name"] == q["name"] for v in self.versions[pid]):
                    return 409, {"code": 6, "message": f"pipeline version {q['name']} already exists"}
                v = {"pipeline_id": pid, "pipeline_version_id": f"{pid}-v{len(self.versions[pid]) + 1}",
                     "display_name": q["name"], "name": q["name"], "created_at": f"2026-11-25T11:00:0{len(self.versions[pid])}Z"}
                self.versions[pid].append(v)
                return 200, v
            if path == f"{API}/experiments":
                e = {**body, "experiment_id": f"e-{len(self.experiments) + 1}", "storage_state": "AVAILABLE"}
                self.experiments.append(e)
                return 200, e
            if path == f"{API}/runs":
                return 200, {**body, "run_id": "r-1", "state": "PENDING"}
            if path == f"{API}/recurringruns":
                return 200, {**body, "recurring_run_id": "rr-1", "status": "ENABLED"}
        return 404, {"code": 5, "message": f"no route {path}"}

    def one(self, method: str, path: str) -> dict[str, Any]:
        (hit,) = [r for r in self.requests if (r["method"], r["path"]) == (method, path)]
        return hit


@pytest.fixture(autouse=True)
def _isolated_kfp_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kfp.Client reads and writes ~/.config/kfp/context.json: keep the user's out of the tests."""
    import kfp.client.client as kfp_client

    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for var in ("KF_PIPELINES_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)


PARAMS = ["revision=0123456789", "sft_max_steps=200", "sft_learning_rate=1e-5", "use_lora=true",
          'gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}',
          'gpu_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]']
TYPED = {"revision": "0123456789", "sft_max_steps": 200, "sft_learning_rate": 1e-05, "use_lora": True,
         "gpu_node_selector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
         "gpu_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}


def test_first_submission_creates_pipeline_and_experiment_then_starts_a_run() -> None:
    with FakeKFP() as fake:
        result = submit(fake.url, token=Token(value=TOKEN), namespace=NS, experiment="nightly", service_account=SA,
                        params=PARAMS, version_name="v0.1.0-test", run_name="first run")
    assert fake.calls() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload_version"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ], "the version check, then one pipeline with one version"
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in fake.requests)
    listing = fake.requests[1]["query"]
    assert listing["namespace"] == NS
    assert json.loads(listing["filter"])["predicates"][0] == {"operation": "EQUALS", "key": "display_name",
                                                              "stringValue": PIPELINE_NAME}
    created = fake.one("POST", f"{API}/pipelines")["body"]
    assert created["display_name"] == PIPELINE_NAME and created["namespace"] == NS
    upload = fake.one("POST", f"{API}/pipelines/upload_version")
    assert upload["query"] == {"name": "v0.1.0-test", "pipelineid": "p-1", "description": upload["query"]["description"]}
    assert upload["body"]["uploadfile"]["content"] == COMPILED.read_bytes(), "no tag or digest: the compiled YAML as is"
    exp = fake.one("POST", f"{API}/experiments")["body"]
    assert exp["display_name"] == "nightly" and exp["namespace"] == NS
    run = fake.one("POST", f"{API}/runs")["body"]
    assert run["display_name"] == "first run" and run["experiment_id"] == "e-1"
    assert run["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "p-1-v1"}
    assert run["service_account"] == SA
    assert run["runtime_config"]["parameters"] == TYPED
    assert "pipeline_spec" not in run, "runs reference the uploaded version, not an inline spec"
    assert result.run_id == "r-1" and result.created_pipeline and result.pipeline_version_id == "p-1-v1"
    assert result.parameters == TYPED and result.kfp_version == "2.15.2" and result.uploaded_version
    assert result.images == sorted({image("cpu"), image("train-gpu")})


def test_later_submission_adds_a_version_and_schedules_a_recurring_run() -> None:
    existing_p = [{"pipeline_id": "p-9", "display_name": PIPELINE_NAME, "name": PIPELINE_NAME, "namespace": NS}]
    existing_e = [{"experiment_id": "e-7", "display_name": "nightly", "namespace": NS}]
    with FakeKFP(pipelines=existing_p, experiments=existing_e) as fake:
        result = submit(fake.url, token=Token(value=TOKEN), namespace=NS, experiment="nightly", service_account=SA,
                        params=["sft_max_steps=50"], recurring_cron="0 3 * * *", version_name="v0.1.0-nightly")
    assert fake.calls() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload_version"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/recurringruns"),
    ], "an explicit version name is never reused: it is uploaded (KFP refuses a duplicate)"
    upv = fake.one("POST", f"{API}/pipelines/upload_version")
    assert upv["query"]["pipelineid"] == "p-9" and upv["query"]["name"] == "v0.1.0-nightly"
    assert upv["body"]["uploadfile"]["content"] == COMPILED.read_bytes()
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in fake.requests)
    rr = fake.one("POST", f"{API}/recurringruns")["body"]
    assert rr["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert rr["mode"] == "ENABLE" and rr["no_catchup"] is True and int(rr["max_concurrency"]) == 1
    assert rr["experiment_id"] == "e-7" and rr["service_account"] == SA
    assert rr["pipeline_version_reference"] == {"pipeline_id": "p-9", "pipeline_version_id": "p-9-v1"}
    assert rr["runtime_config"]["parameters"] == {"sft_max_steps": 50}
    assert result.recurring_run_id == "rr-1" and result.run_id is None and not result.created_pipeline
    assert result.cron == "0 0 3 * * *"


def test_token_file_and_no_namespace_ask_healthz(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("projected-sa-token\n")
    with FakeKFP(multi_user=False) as fake:
        submit(fake.url, token=resolve_token(token_file=token_file), version_name="v1")
    assert fake.calls()[0] == ("GET", f"{API}/healthz")
    assert all(r["auth"] == "Bearer projected-sa-token" for r in fake.requests)
    assert not fake.one("POST", f"{API}/pipelines")["body"].get("namespace")
    run = fake.one("POST", f"{API}/runs")["body"]
    assert "service_account" not in run or run["service_account"] is None
    assert run["runtime_config"]["parameters"] == {}


def test_without_a_token_no_authorization_header_is_sent() -> None:
    with FakeKFP(multi_user=False) as fake:
        submit(fake.url, token=Token(), namespace=NS, version_name="v1")
    assert {r["auth"] for r in fake.requests} == {None}


def test_a_refused_token_is_a_clear_error() -> None:
    with FakeKFP(require_token=TOKEN) as fake, pytest.raises(SubmitError, match="401 .*Unauthenticated.*audience"):
        submit(fake.url, token=Token(value="wrong"), namespace=NS, version_name="v1")
    assert fake.calls() == [("GET", f"{API}/healthz"), ("GET", f"{API}/pipelines")], "stops at the first refusal"


def test_resolve_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_token().source == "none" or resolve_token().path  # a pod may have the projected token
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "from-default-env")
    assert resolve_token().value == "from-default-env"
    monkeypatch.setenv("MY_KFP_TOKEN", "from-named-env")
    assert resolve_token("MY_KFP_TOKEN").value == "from-named-env"
    with pytest.raises(SubmitError, match="--token-env NOPE"):
        resolve_token("NOPE")
    f = tmp_path / "t"
    f.write_text("file-token")
    assert resolve_token("MY_KFP_TOKEN", f).path == str(f), "an explicit token file wins"
    monkeypatch.delenv("KF_PIPELINES_TOKEN")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(f))
    assert resolve_token().path == str(f), "kfp's projected-token variable is honoured"
    with pytest.raises(SubmitError, match="does not exist"):
        resolve_token(token_file=tmp_path / "missing")


def test_parameters_are_typed_by_the_compiled_pipeline_and_checked_before_any_request() -> None:
    defs = pipeline_parameters()
    assert defs["sft_max_steps"]["parameterType"] == "NUMBER_INTEGER"
    assert parse_params(PARAMS) == TYPED
    assert parse_params(["revision=true"]) == {"revision": "true"}, "strings stay strings"
    assert parse_params({"sft_epochs": 3}) == {"sft_epochs": 3.0}
    for bad, msg in [("sft_max_step=3", "did you mean sft_max_steps"), ("sft_max_steps=1.5", "integer"),
                     ("use_lora=maybe", "boolean"), ("gpu_node_selector=[1]", "STRUCT"),
                     ("gpu_tolerations={bad", "JSON"), ("novalue", "NAME=VALUE")]:
        with pytest.raises(SubmitError, match=msg):
            parse_params([bad])
    with FakeKFP() as fake, pytest.raises(SubmitError):
        submit(fake.url, token=Token(value=TOKEN), namespace=NS, params=["nope=1"])
    assert fake.requests == [], "nothing is sent for a bad parameter"


def test_cron_is_normalized_to_kfps_six_fields() -> None:
    assert normalize_cron("0 3 * * *") == "0 0 3 * * *"
    assert normalize_cron("30 0 3 * * 1-5") == "30 0 3 * * 1-5"
    with pytest.raises(SubmitError, match="5 fields"):
        normalize_cron("@daily")


def test_missing_host_or_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SubmitError, match="KF_PIPELINES_ENDPOINT"):
        submit("", token=Token(), version_name="v1")
    with pytest.raises(SubmitError, match="rner pipeline compile"):
        submit("http://127.0.0.1:9", package=tmp_path / "nope.yaml")


def test_an_unreachable_endpoint_is_a_clear_error_naming_it() -> None:
    """Nothing listens on the port: one line naming the endpoint, from the CLI exit 2, no traceback."""
    import socket

    from typer.testing import CliRunner

    from reasoning_ner.cli import app

    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        host = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(SubmitError, match=f"cannot reach Kubeflow Pipelines at {host}: .*Connection refused"):
        submit(host, params=["revision=abc"])
    res = CliRunner().invoke(app, ["pipeline", "submit", "--host", host, "--skip-version-check"])
    assert res.exit_code == 2 and f"cannot reach Kubeflow Pipelines at {host}" in res.output
    assert "Traceback" not in res.output


def test_cli_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rner pipeline submit` (src/reasoning_ner/cli.py) drives the same function."""
    from typer.testing import CliRunner

    from reasoning_ner.cli import app

    runner = CliRunner()
    monkeypatch.setenv("RNER_TEST_KFP_TOKEN", TOKEN)
    digest = "sha256:" + "e" * 64
    with FakeKFP() as fake:
        res = runner.invoke(app, ["pipeline", "submit", "--host", fake.url, "--token-env", "RNER_TEST_KFP_TOKEN",
                                  "--namespace", NS, "--experiment", "cli", "--service-account", SA,
                                  "--param", "sft_max_steps=7", "--param", "use_lora=false",
                                  "--recurring-cron", "0 4 * * *", "--version-name", "v-cli",
                                  "--image-tag", "sha-0123456789ab", "--image-digest", f"cpu={digest}"])
        assert res.exit_code == 0, res.output
        sent = fake.one("POST", f"{API}/pipelines/upload_version")["body"]["uploadfile"]["content"].decode()
        bad = runner.invoke(app, ["pipeline", "submit", "--host", fake.url, "--image-digest", "cpu"])
    assert image("cpu", "sha-0123456789ab", digest) in sent and image("train-gpu", "sha-0123456789ab") in sent
    assert bad.exit_code == 2 and "IMAGE=sha256:" in bad.output
    rr = fake.one("POST", f"{API}/recurringruns")["body"]
    assert rr["runtime_config"]["parameters"] == {"sft_max_steps": 7, "use_lora": False}
    assert rr["service_account"] == SA and rr["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * *"
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in fake.requests)
    assert "rr-1" in res.output


# ------------------------------------------------------------------------------------- images and versions


def test_an_unchanged_pipeline_reuses_its_version_and_a_changed_one_becomes_a_new_one() -> None:
    with FakeKFP() as fake:
        first = submit(fake.url, token=Token(value=TOKEN), namespace=NS)
        again = submit(fake.url, token=Token(value=TOKEN), namespace=NS)
        built = submit(fake.url, token=Token(value=TOKEN), namespace=NS, image_tag="sha-0123456789ab")
    text = COMPILED.read_text()
    assert first.version_name == content_version(text) and first.uploaded_version and first.created_pipeline
    assert again.version_name == first.version_name and not again.uploaded_version
    assert again.pipeline_version_id == first.pipeline_version_id, "the run uses the registered identical version"
    assert built.uploaded_version and built.version_name != first.version_name
    uploads = [r for r in fake.requests if r["path"] == f"{API}/pipelines/upload_version"]
    assert [u["query"]["name"] for u in uploads] == [first.version_name, built.version_name]
    lookups = [r for r in fake.requests if r["path"].endswith("/versions")]
    assert json.loads(lookups[0]["query"]["filter"])["predicates"][0]["stringValue"] == first.version_name


def test_image_references_are_rewritten_to_the_build_before_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = "sha256:" + "d" * 64
    monkeypatch.setenv("RNER_IMAGE_TAG", "sha-0123456789ab")
    monkeypatch.setenv("RNER_IMAGE_DIGESTS", f"train-gpu={digest}")
    with FakeKFP() as fake:
        result = submit(fake.url, token=Token(value=TOKEN), namespace=NS)
    sent = fake.one("POST", f"{API}/pipelines/upload_version")["body"]["uploadfile"]["content"].decode()
    assert image("cpu") not in sent and image("train-gpu") not in sent, "no stable reference is left"
    assert image("cpu", "sha-0123456789ab") in sent and image("train-gpu", "sha-0123456789ab", digest) in sent
    assert result.images == sorted({image("cpu", "sha-0123456789ab"), image("train-gpu", "sha-0123456789ab", digest)})
    assert result.version_name == content_version(sent)
    assert sent.replace(image("cpu", "sha-0123456789ab"), image("cpu")).replace(
        image("train-gpu", "sha-0123456789ab", digest), image("train-gpu")) == COMPILED.read_text(), "only the references change"
    assert COMPILED.read_text().count(image("cpu")) > 0, "the committed YAML keeps the stable reference"


def test_bad_image_settings_fail_before_any_request() -> None:
    with FakeKFP() as fake:
        for kwargs, msg in [({"image_digests": {"gpu": "sha256:" + "0" * 64}}, "unknown images"),
                            ({"image_digests": {"cpu": "sha256:abc"}}, "not sha256"),
                            ({"image_tag": "sha 01"}, "not a valid tag")]:
            with pytest.raises(SubmitError, match=msg):
                submit(fake.url, token=Token(value=TOKEN), namespace=NS, **kwargs)
    assert fake.requests == []
    assert parse_digests("cpu=sha256:1, serve=sha256:2") == {"cpu": "sha256:1", "serve": "sha256:2"}
    with pytest.raises(SubmitError, match="NAME=sha256"):
        parse_digests("sha256:1")


@pytest.mark.parametrize("found", ["2.14.3", "2.5.0", "unknown", "", "1.8.22"])
def test_an_old_or_unversioned_backend_is_refused_naming_both_versions(found: str) -> None:
    with FakeKFP(kfp_version=found) as fake, pytest.raises(SubmitError) as exc:
        submit(fake.url, token=Token(value=TOKEN), namespace=NS)
    message = str(exc.value)
    assert f"reports version {found!r}" in message and f"needs >= {MIN_KFP_BACKEND_VERSION}" in message
    assert "RNER_KFP_SKIP_VERSION_CHECK" in message and "optional: true on Secrets" in message
    assert fake.calls() == [("GET", f"{API}/healthz")], "nothing is registered on a backend that would misrun it"


def test_the_version_check_passes_newer_backends_and_can_be_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    for ok in ("2.15.0", "v2.16.1", "3.0.0-rc.1"):
        check_backend_version(ok)
    with FakeKFP(kfp_version="2.14.0") as fake:
        assert submit(fake.url, token=Token(value=TOKEN), namespace=NS, check_version=False).kfp_version is None
        monkeypatch.setenv("RNER_KFP_SKIP_VERSION_CHECK", "1")
        submit(fake.url, token=Token(value=TOKEN), namespace=NS)
    assert ("GET", f"{API}/healthz") not in fake.calls()


def test_the_minimum_backend_version_covers_what_the_compiled_pipeline_uses() -> None:
    """MIN_KFP_BACKEND_VERSION is the newest of the features the compiled pipeline relies on."""
    assert MIN_KFP_BACKEND_VERSION == "2.15.0"
    assert max(KFP_BACKEND_FEATURES.values(), key=lambda v: tuple(map(int, v.split(".")))) == MIN_KFP_BACKEND_VERSION
    text = COMPILED.read_text()
    assert "nodeSelectorJson:\n              componentInputParameter: gpu_node_selector" in text
    assert "tolerationJson:\n              componentInputParameter: gpu_tolerations" in text
    assert "parameterType: LIST" in text and "optional: true" in text


def test_prepare_package_is_the_identity_without_a_build() -> None:
    content, name = prepare_package(COMPILED)
    assert content == COMPILED.read_text() and name == content_version(content)
