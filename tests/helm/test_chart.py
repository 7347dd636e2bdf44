"""The chart as a whole: lint, versions, values documentation, schema, and every rendered object.

* ``helm lint --strict`` (Helm v4 SDK) and a render for the defaults and every example values file;
* appVersion is the package version; the default image tags are ``reasoning_ner.images`` tags; the
  pipeline version name defaults to it;
* values.yaml: the `serving` section is the cpu-smoke settings (``to_helm_values()``), every key
  has a comment above it, no secret values; README.md's table lists every top-level key;
* values.schema.json is what tests/helm/schema_tool.py builds and refuses bad values clearly;
* every object of every render is valid (CRDs, kubernetes-validate, structural) and meets the
  security defaults (non-root, read-only root, no privilege escalation, capabilities dropped,
  seccomp, requests and limits, images pinned).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import reasoning_ner
from pipelines.reasoning_ner_pipeline import COMPILED
from reasoning_ner.config.serving import ServingSettings
from reasoning_ner.images import content_version, image
from reasoning_ner.k8s import overlay_settings

from . import schema_tool
from .chart_tools import (
    CHART,
    EXAMPLES,
    NAMESPACE,
    RELEASE,
    by_kind,
    chart,
    chart_defaults,
    helm,
    load_values,
    one,
    render,
    render_error,
    render_files,
    validate,
)

#: Everything switched on at once (multi-user Kubeflow, multi-node, runtime pin, monitoring, external KEDA).
EVERYTHING: dict[str, Any] = {
    "serving": {"autoscaler": "external", "scaling": {"maxReplicas": 3},
                "transformer": {"auth": {"existingSecret": "reasoning-ner-api-keys"}, "logger": {"enabled": True}}},
    "flywheel": {"sink": {"enabled": True}},
    "servingRuntime": {"enabled": True},
    "kfp": {"multiUser": True, "namespace": "kubeflow-user-example-com"},
    "multiNode": {"enabled": True, "sharedPvc": {"storageClassName": "efs-sc"}, "grpoRuntime": {"enabled": True}},
    "secrets": {"s3": {"create": True, "accessKeyId": "minio", "secretAccessKey": "minio-dev-key"}},
    "monitoring": {"podMonitor": {"enabled": True}, "dashboard": {"enabled": True}, "alerts": {"enabled": True}},
    "images": {"pullSecrets": ["ghcr-pull"], "serve": {"digest": "sha256:" + "b" * 64}},
}

RENDERS = {"defaults": None, **{p.stem: load_values(p) for p in EXAMPLES}, "everything": EVERYTHING}


# ------------------------------------------------------------------------------------ lint


@pytest.mark.parametrize("example", [None, *EXAMPLES], ids=["defaults", *[p.stem for p in EXAMPLES]])
def test_lint_strict_is_clean(example: Path | None) -> None:
    values = load_values(example) if example else None
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_lint_reports_schema_violations() -> None:
    report = helm.lint(str(CHART), {"serving": {"mode": "serverless"}}, strict=True, namespace=NAMESPACE)
    assert any(m["severity"] == 3 and "/serving/mode" in m["error"] for m in report["messages"]), report


def test_examples_are_the_three_documented_ones() -> None:
    assert sorted(p.stem for p in EXAMPLES) == ["cpu-smoke", "gpu-knative", "standard-keda"]


# ------------------------------------------------------------------------------------ versions


def test_app_version_is_the_package_version() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] == reasoning_ner.__version__
    assert re.match(r"^\d+\.\d+\.\d+", meta["version"])


def test_default_image_tags_are_the_package_images() -> None:
    objs = render()
    isvc = one(objs, "InferenceService")
    assert isvc["spec"]["transformer"]["containers"][0]["image"] == image("serve")
    job = one(objs, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == image("cpu")
    pod = one(objs, "Pod")
    assert pod["spec"]["containers"][0]["image"] == image("cpu")


def test_image_tag_and_digest_values() -> None:
    objs = render({"images": {"tag": "0.2.0-rc1", "cpu": {"digest": "sha256:" + "c" * 64}}})
    assert one(objs, "InferenceService")["spec"]["transformer"]["containers"][0]["image"] == image("serve", "0.2.0-rc1")
    assert one(objs, "Job")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        image("cpu", "0.2.0-rc1") + "@sha256:" + "c" * 64


def test_pipeline_version_is_the_package_version_and_the_content_hash() -> None:
    cm = one(render(), "ConfigMap", f"{RELEASE}-pipeline")
    version = cm["metadata"]["annotations"]["reasoning-ner.io/pipeline-version"]
    assert version == content_version(COMPILED.read_text()) and version.startswith(reasoning_ner.__version__ + "-")
    env = {e["name"]: e["value"] for e in one(render(), "Job")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PIPELINE_VERSION"] == version


# ------------------------------------------------------------------------------------ values.yaml


def test_serving_defaults_are_the_cpu_smoke_settings() -> None:
    """values.yaml's serving section = the cpu-smoke overlay's to_helm_values(), except the values the
    chart fills in itself (empty = release name / namespace / project image; null autoscaler = by mode;
    null imagePullSecrets = images.pullSecrets)."""
    expected = overlay_settings("cpu-smoke").to_helm_values()
    expected.update({"name": "", "namespace": "", "autoscaler": None, "imagePullSecrets": None})
    expected["transformer"]["image"] = ""
    assert chart_defaults()["serving"] == expected


def _key_lines(text: str) -> list[tuple[int, str]]:
    out = []
    for i, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if re.match(r"^\s*[A-Za-z0-9_.\-/\"]+:(\s|$)", line):
            out.append((i, line))
    return out


def test_every_key_in_values_yaml_has_a_comment_above_it() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    missing = []
    for i, line in _key_lines("\n".join(lines)):
        prev = lines[i - 1].strip() if i else ""
        if not prev.startswith("#"):
            missing.append(f"line {i + 1}: {line.strip()}")
    assert not missing, "keys without a comment above them:\n" + "\n".join(missing)


def test_every_leaf_of_values_yaml_is_a_key_line() -> None:
    """The comment check sees every leaf: count the leaves of the parsed values."""
    def leaves(node: Any) -> int:
        if isinstance(node, dict) and node:
            return sum(leaves(v) for v in node.values())
        return 1
    keys = len(_key_lines((CHART / "values.yaml").read_text()))
    assert keys >= leaves(chart_defaults())


SECRETISH = re.compile(r"(password|passwd|secret[-_]?key|access[-_]?key|token|api[-_]?key|credential)", re.I)


def test_no_secret_values_in_values_yaml() -> None:
    """Keys that sound like secrets hold only names of Secrets, key names, or numbers/booleans."""
    allowed = {"s3AccessKeyIdKey", "s3SecretAccessKeyKey", "tokenAudience", "tokenExpirationSeconds", "s3SecretName",
               "secretKey"}  # transformer.auth.secretKey: the name of a key in the API-key Secret

    def walk(node: Any, path: str) -> list[str]:
        found = []
        if isinstance(node, dict):
            for k, v in node.items():
                if SECRETISH.search(k) and k not in allowed and isinstance(v, str) and v:
                    found.append(f"{path}.{k}")
                found += walk(v, f"{path}.{k}")
        return found

    for path in [CHART / "values.yaml", *EXAMPLES]:
        assert walk(load_values(path), path.name) == []
    text = (CHART / "values.yaml").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|-----BEGIN|hf_[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{20,}", text)


def test_readme_table_lists_every_top_level_key() -> None:
    readme = (CHART / "README.md").read_text()
    table_keys = set(re.findall(r"^\|\s*`([A-Za-z]+)`\s*\|", readme, re.M))
    top = set(chart_defaults())
    assert top <= table_keys, f"missing from the README values table: {sorted(top - table_keys)}"
    assert table_keys <= top | {"global"}, f"README lists unknown keys: {sorted(table_keys - top)}"


# ------------------------------------------------------------------------------------ schema


def test_schema_file_is_up_to_date() -> None:
    committed = (CHART / "values.schema.json").read_text()
    assert committed == schema_tool.render(), "values.schema.json is stale: run `.venv/bin/python -m tests.helm.schema_tool`"


def test_schema_accepts_the_defaults_the_examples_and_to_helm_values() -> None:
    c = chart()
    c.validate_schema(chart_defaults())
    for path in EXAMPLES:
        c.validate_schema(c.merge_values(load_values(path)))
    c.validate_schema(c.merge_values({"serving": overlay_settings("knative").to_helm_values()}))


SCHEMA_REJECTIONS: list[tuple[dict[str, Any], str]] = [
    ({"serving": {"mode": "serverless"}}, "at '/serving/mode': value must be one of 'standard', 'knative'"),
    ({"serving": {"autoscaler": "hpa"}}, "/serving/autoscaler"),
    ({"serving": {"predictor": {"gpuz": 1}}}, "at '/serving/predictor': additional properties 'gpuz' not allowed"),
    ({"serving": {"predictor": {"resources": {"cpuRequest": "4 cores"}}}}, "/serving/predictor/resources/cpuRequest"),
    ({"serving": {"predictor": {"resources": {"memoryLimit": 48}}}}, "/serving/predictor/resources/memoryLimit"),
    ({"serving": {"storage": {"storageUri": "/home/me/model"}}}, "/serving/storage/storageUri"),
    ({"serving": {"scaling": {"minReplicas": -1}}}, "at '/serving/scaling/minReplicas': minimum: got -1, want 0"),
    ({"serving": {"predictor": {"gpuMemoryUtilization": 1.5}}}, "/serving/predictor/gpuMemoryUtilization"),
    ({"serving": {"predictor": {"dtype": "int4"}}}, "/serving/predictor/dtype"),
    ({"serving": {"knative": {"progressDeadline": "30 minutes"}}}, "/serving/knative/progressDeadline"),
    ({"serving": {"name": "Reasoning_NER"}}, "/serving/name"),
    ({"serving": {"networkPolicy": {"gatewayPorts": [70000]}}}, "/serving/networkPolicy/gatewayPorts/0"),
    ({"serving": {"predictor": {"image": "kserve/huggingfaceserver"}}}, "/serving/predictor/image"),
    ({"images": {"serve": {"digest": "sha256:abc"}}}, "/images/serve/digest"),
    ({"kfp": {"host": "ml-pipeline:8888"}}, "/kfp/host"),
    ({"monitoring": {"alerts": {"errorRatio": 2}}}, "at '/monitoring/alerts/errorRatio': maximum: got 2, want 1"),
    ({"monitoring": {"podMonitor": {"interval": "30"}}}, "/monitoring/podMonitor/interval"),
    ({"tests": {"labels": []}}, "/tests/labels"),
    ({"secrets": {"s3": {"name": "S3 Keys"}}}, "/secrets/s3/name"),
    ({"unknownSection": {}}, "additional properties 'unknownSection' not allowed"),
    ({"serving": {"storage": {"irsaRoleArn": "my-role"}}}, "/serving/storage/irsaRoleArn"),
    ({"serving": {"imagePullSecrets": ["Bad Name"]}}, "/serving/imagePullSecrets"),
    ({"serving": {"transformer": {"auth": {"existingSecret": "API Keys"}}}}, "/serving/transformer/auth/existingSecret"),
    ({"serving": {"transformer": {"auth": {"secretKey": "keys/v2"}}}}, "/serving/transformer/auth/secretKey"),
    ({"serving": {"transformer": {"profile": "tiny_cpu"}}}, "/serving/transformer/profile"),
    ({"serving": {"networkPolicy": {"prometheusPodLabels": {"bad key!": "x"}}}}, "/serving/networkPolicy/prometheusPodLabels"),
    ({"kfp": {"namespace": "Kubeflow"}}, "/kfp/namespace"),
    ({"multiNode": {"sharedPvc": {"size": "lots"}}}, "/multiNode/sharedPvc/size"),
    ({"images": {"trainGpu": {"digest": "sha256:xyz"}}}, "/images/trainGpu/digest"),
]


@pytest.mark.parametrize("values,message", SCHEMA_REJECTIONS, ids=[m.split("'")[1] if "'" in m else m for _, m in SCHEMA_REJECTIONS])
def test_schema_rejects_bad_values_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as exc:
        chart().render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(exc.value), str(exc.value)


#: Chart-level refusals that need more than the schema (template `fail` with a message).
TEMPLATE_REJECTIONS: list[tuple[dict[str, Any], str]] = [
    ({"secrets": {"git": {"name": "my-git"}}}, "secrets.git.name \"my-git\" is not a Secret the compiled pipeline"),
    ({"serving": {"storage": {"s3SecretName": "other-s3"}}}, "differs from secrets.s3.name"),
    ({"servingRuntime": {"enabled": True}, "serving": {"predictor": {"runtime": None}}},
     "servingRuntime.enabled needs serving.predictor.runtime"),
    ({"serving": {"predictor": {"image": "kserve/huggingfaceserver:latest"}}}, "is not pinned"),
    ({"images": {"tag": "latest"}}, "images.cpu \"ghcr.io/reasoning-ner/reasoning-ner-cpu:latest\" is not pinned"),
    ({"kfp": {"namespace": ""}}, "kfp.namespace is empty: set it to the namespace where pipeline runs execute"),
    ({"kfp": {"multiUser": True}}, "kfp.multiUser is true but kfp.namespace is 'kubeflow'"),
    ({"multiNode": {"enabled": True, "namespace": "training"}},
     "multiNode.namespace \"training\" differs from kfp.namespace \"kubeflow\""),
    ({"secrets": {"s3": {"create": True, "accessKeyId": "minio"}}},
     "secrets.s3.create needs secrets.s3.accessKeyId and secrets.s3.secretAccessKey"),
    ({"serving": {"storage": {"s3SecretName": None}}},
     "storage.s3_endpoint is set but neither storage.s3_secret_name nor storage.irsa_role_arn"),
    ({"serving": {"predictor": {"resources": {"cpuRequest": 4}}}}, "predictor.resources: cpu_request 4 exceeds cpu_limit 2"),
]


@pytest.mark.parametrize("values,message", TEMPLATE_REJECTIONS, ids=[str(i) for i in range(len(TEMPLATE_REJECTIONS))])
def test_chart_level_refusals(values: dict[str, Any], message: str) -> None:
    assert message in render_error(values)


# ------------------------------------------------------------------------------------ every object


@pytest.mark.parametrize("case", sorted(RENDERS))
def test_every_rendered_object_is_valid(case: str) -> None:
    objs = render(RENDERS[case])
    assert validate(objs) == []
    assert all(o["metadata"].get("namespace") for o in objs), "every object names its namespace"


@pytest.mark.parametrize("cpu, rendered", [(4, "4"), (0.5, "0.5"), ("500m", "500m")])
def test_cpu_may_be_a_number_as_in_kubernetes(cpu: Any, rendered: str) -> None:
    """`--set serving.predictor.resources.cpuLimit=4` (an int to Helm) or `cpuRequest: 0.5` in a values file."""
    values = {"serving": {"predictor": {"resources": {"cpuRequest": cpu, "cpuLimit": cpu}}}}
    objs = render(values)
    assert validate(objs) == []
    (isvc,) = by_kind(objs, "InferenceService")
    resources = isvc["spec"]["predictor"]["model"]["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == rendered
    assert ServingSettings.model_validate(values["serving"]).predictor.resources.cpu_limit == rendered


def test_defaults_render_a_complete_release() -> None:
    kinds = sorted(o["kind"] for o in render())
    assert kinds == sorted(["InferenceService", "ServiceAccount", "ServiceAccount", "ServiceAccount", "ServiceAccount",
                            "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy", "NetworkPolicy",
                            "ConfigMap", "ConfigMap",
                            "Role", "RoleBinding", "Role", "RoleBinding", "Job", "Pod",
                            # the helm test's preflight: its values ConfigMap, a read-only Role per namespace
                            "ConfigMap", "Role", "RoleBinding", "Role", "RoleBinding"])
    names = {(o["kind"], o["metadata"]["name"]) for o in render()}
    assert ("ServiceAccount", "reasoning-ner-serving") in names


def test_everything_renders_every_template() -> None:
    files = render_files(EVERYTHING)
    empty = sorted(p for p, text in files.items() if not text.strip() and not Path(p).name.startswith("_"))
    assert empty == [], f"templates that render nothing with everything on: {empty}"


def _pod_specs(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for o in objs:
        if o["kind"] == "Pod":
            out.append((f"Pod {o['metadata']['name']}", o["spec"]))
        elif o["kind"] == "Job":
            out.append((f"Job {o['metadata']['name']}", o["spec"]["template"]["spec"]))
    return out


def _serving_containers(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for o in by_kind(objs, "InferenceService"):
        out.append(("predictor", o["spec"]["predictor"]["model"]))
        for c in o["spec"].get("transformer", {}).get("containers", []):
            out.append(("transformer", c))
    for o in by_kind(objs, "ServingRuntime"):
        out += [("runtime", c) for c in o["spec"]["containers"]]
    return out


@pytest.mark.parametrize("case", sorted(RENDERS))
def test_security_defaults_on_every_container(case: str) -> None:
    objs = render(RENDERS[case])
    containers = _serving_containers(objs)
    for where, spec in _pod_specs(objs):
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] and psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec.get("serviceAccountName") and spec["serviceAccountName"] != "default", where
        containers += [(f"{where}/{c['name']}", c) for c in spec["containers"]]
    assert containers
    for where, c in containers:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], where
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (where, kind)
        ref = c.get("image")
        if ref:
            assert re.search(r":[A-Za-z0-9_][A-Za-z0-9_.-]*(@sha256:[a-f0-9]{64})?$|@sha256:[a-f0-9]{64}$", ref), ref
            assert not re.search(r":latest(@|$)", ref), ref


def test_service_accounts_without_api_tokens() -> None:
    for sa in by_kind(render(EVERYTHING), "ServiceAccount"):
        if sa["metadata"]["name"] != "reasoning-ner-pipeline-runner":  # runs' pods need their token (KFP driver)
            assert sa["automountServiceAccountToken"] is False, sa["metadata"]["name"]
