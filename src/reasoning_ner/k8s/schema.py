"""Offline validation of rendered objects, as strict as an API server with ``fieldValidation=Strict``.

* Custom resources (InferenceService, ServingRuntime, ClusterServingRuntime, ScaledObject, TrainJob,
  ClusterTrainingRuntime) against the ``openAPIV3Schema`` of the served version in the upstream CRD
  files (``shared/k8s/crds``; pass ``crd_dir`` or set ``RNER_CRD_DIR``). The API server prunes or
  (strict) rejects unknown fields, so every object schema with ``properties`` gets
  ``additionalProperties: false`` unless it says ``x-kubernetes-preserve-unknown-fields``;
  ``x-kubernetes-int-or-string`` admits only integers and strings; ``format: int32/int64`` are range
  checked; ``x-kubernetes-validations`` (CEL) rules are evaluated where a Python equivalent is known
  (:data:`CEL_RULES`) and reported as errors otherwise, never skipped silently. ``metadata`` is checked
  like ObjectMeta (name, namespace, string labels and annotations).
* Core kinds (ServiceAccount, Secret, NetworkPolicy, ConfigMap, ...) with ``kubernetes_validate``
  (strict, default Kubernetes 1.33).

Requires ``jsonschema`` (and ``kubernetes_validate`` for core kinds), imported here only.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

DEFAULT_K8S_VERSION = "1.33"

#: (group, kind) -> CRD file name in the upstream layout.
CRD_FILES: dict[tuple[str, str], str] = {
    ("serving.kserve.io", "InferenceService"): "serving.kserve.io_inferenceservices.yaml",
    ("serving.kserve.io", "ServingRuntime"): "serving.kserve.io_servingruntimes.yaml",
    ("serving.kserve.io", "ClusterServingRuntime"): "serving.kserve.io_clusterservingruntimes.yaml",
    ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("trainer.kubeflow.org", "TrainJob"): "trainer.kubeflow.org_trainjobs.yaml",
    ("trainer.kubeflow.org", "ClusterTrainingRuntime"): "trainer.kubeflow.org_clustertrainingruntimes.yaml",
    # Not copied upstream: a TrainingRuntime's spec is the same Go type (TrainingRuntimeSpec) as a
    # ClusterTrainingRuntime's, and its CRD schema is identical but for the scope and one description.
    ("trainer.kubeflow.org", "TrainingRuntime"): "trainer.kubeflow.org_clustertrainingruntimes.yaml",
}
#: Kinds validated with another kind's CRD (see CRD_FILES).
SCHEMA_OF: dict[tuple[str, str], str] = {("trainer.kubeflow.org", "TrainingRuntime"): "ClusterTrainingRuntime"}

#: CEL rules of the CRDs with their Python equivalents (rule text -> predicate on the object at that node).
CEL_RULES: dict[str, Callable[[Any], bool]] = {
    # keda.sh ScaledObject spec
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? self.maxReplicaCount : 100)":
        lambda o: "minReplicaCount" not in o or o["minReplicaCount"] <= o.get("maxReplicaCount", 100),
    # transition rules (immutability) only apply to updates: always true for a new object
    "self == oldSelf": lambda o: True,
    # trainer.kubeflow.org (Cluster)TrainingRuntime spec.mlPolicy and spec.template.spec
    "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost),has(self.flux)].filter(x, x).size() <= 1":
        lambda o: sum(k in o for k in ("torch", "mpi", "jax", "xgboost", "flux")) <= 1,
    "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
    "self.replicatedJobs.exists(x, has(x.dependsOn)))":
        lambda o: not (o.get("startupPolicy", {}).get("startupPolicyOrder") == "InOrder"
                       and any("dependsOn" in j for j in o.get("replicatedJobs", []))),
}

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


class ManifestValidationError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid manifest(s):\n  " + "\n  ".join(problems))


def default_crd_dir() -> Path:
    """``$RNER_CRD_DIR``, else ``../shared/k8s/crds`` next to the working directory or this checkout."""
    env = os.environ.get("RNER_CRD_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path.cwd().parent / "shared" / "k8s" / "crds",
                   Path(__file__).resolve().parents[3].parent / "shared" / "k8s" / "crds"]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError("CRD directory not found; set RNER_CRD_DIR to the folder with the upstream CRD YAML files "
                            f"(tried {', '.join(str(c) for c in candidates)})")


def _load_yaml(path: Path) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path) as fh:
        return yaml.load(fh, Loader=loader)


def _strictify(node: Any) -> Any:
    """Copy of a structural schema where unknown fields are errors (what strict field validation does)."""
    if isinstance(node, list):
        return [_strictify(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strictify(v) for k, v in node.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def crd_schema(group: str, kind: str, version: str, crd_dir: str) -> dict[str, Any]:
    """The strict ``openAPIV3Schema`` of ``group/version`` ``kind`` from the upstream CRD file."""
    fname = CRD_FILES.get((group, kind))
    if fname is None:
        raise KeyError(f"no CRD file known for {group} {kind}")
    crd = _load_yaml(Path(crd_dir) / fname)
    names = crd["spec"]["names"]
    if crd["spec"]["group"] != group or names["kind"] != SCHEMA_OF.get((group, kind), kind):
        raise ValueError(f"{fname} defines {crd['spec']['group']} {names['kind']}, not {group} {kind}")
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            if not v.get("served", True):
                raise ValueError(f"{group}/{version} {kind} is not served by the CRD")
            schema = copy.deepcopy(v["schema"]["openAPIV3Schema"])
            # ObjectMeta is validated by :func:`_metadata_problems`; status is never sent.
            schema.get("properties", {}).pop("status", None)
            return _strictify(schema)
    served = [v["name"] for v in crd["spec"]["versions"]]
    raise ValueError(f"{kind} has no version {version!r} in {fname} (versions: {served})")


def _validator_class() -> Any:
    import jsonschema
    from jsonschema import Draft7Validator, ValidationError

    def int_or_string(validator: Any, value: Any, instance: Any, schema: Any) -> Iterable[Any]:
        if value and (isinstance(instance, bool) or not isinstance(instance, (int, str))):
            yield ValidationError(f"{instance!r} is neither an integer nor a string (x-kubernetes-int-or-string)")

    def cel(validator: Any, rules: Any, instance: Any, schema: Any) -> Iterable[Any]:
        for rule in rules:
            check = CEL_RULES.get(rule["rule"])
            if check is None:
                yield ValidationError(f"CEL rule {rule['rule']!r} cannot be evaluated offline (add it to CEL_RULES)")
            elif not check(instance):
                yield ValidationError(rule.get("message") or f"failed CEL rule {rule['rule']!r}")

    return jsonschema.validators.extend(Draft7Validator, {"x-kubernetes-int-or-string": int_or_string,
                                                          "x-kubernetes-validations": cel})


def _format_checker() -> Any:
    from jsonschema import FormatChecker

    checker = FormatChecker()
    for fmt, (lo, hi) in INT_RANGES.items():
        def check(instance: Any, lo: int = lo, hi: int = hi) -> bool:
            return not isinstance(instance, int) or isinstance(instance, bool) or lo <= instance <= hi
        checker.checks(fmt)(check)
    return checker


def _path(err: Any) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "<root>"


def _metadata_problems(obj: dict[str, Any], namespaced: bool = True) -> list[str]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return ["metadata: missing"]
    out = []
    allowed = {"name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences",
               "uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
               "deletionGracePeriodSeconds", "managedFields", "selfLink"}
    for key in sorted(set(meta) - allowed):
        out.append(f"metadata.{key}: unknown field")
    name = meta.get("name")
    if not isinstance(name, str) or not DNS_SUBDOMAIN.match(name) or len(name) > 253:
        out.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    ns = meta.get("namespace")
    if ns is not None and (not isinstance(ns, str) or not DNS_LABEL.match(ns) or len(ns) > 63):
        out.append(f"metadata.namespace: {ns!r} is not a DNS label")
    for field in ("labels", "annotations"):
        value = meta.get(field, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            out.append(f"metadata.{field}: must map strings to strings")
    return out


def crd_problems(obj: dict[str, Any], crd_dir: str | Path | None = None) -> list[str]:
    """Problems of a custom resource against its CRD (empty list = valid)."""
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    kind = obj.get("kind", "")
    schema = crd_schema(group, kind, version, str(crd_dir or default_crd_dir()))
    validator = _validator_class()(schema, format_checker=_format_checker())
    body = {k: v for k, v in obj.items() if k != "status"}
    problems = [f"{_path(e)}: {e.message}" for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))]
    return _metadata_problems(obj) + problems


def core_problems(obj: dict[str, Any], k8s_version: str = DEFAULT_K8S_VERSION) -> list[str]:
    """Problems of a core Kubernetes object (strict kubernetes_validate schemas)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    try:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path) or '<root>'}: {exc.message}"]
    except SchemaNotFoundError as exc:
        return [exc.message]
    return []


def is_custom_resource(obj: dict[str, Any]) -> bool:
    group = obj.get("apiVersion", "").rpartition("/")[0]
    return (group, obj.get("kind", "")) in CRD_FILES


def object_problems(obj: dict[str, Any], crd_dir: str | Path | None = None,
                    k8s_version: str = DEFAULT_K8S_VERSION) -> list[str]:
    prefix = f"{obj.get('kind', '?')} {obj.get('metadata', {}).get('name', '?')}: "
    found = crd_problems(obj, crd_dir) if is_custom_resource(obj) else core_problems(obj, k8s_version)
    return [prefix + p for p in found]


def validate_objects(objs: Iterable[dict[str, Any]], crd_dir: str | Path | None = None,
                     k8s_version: str = DEFAULT_K8S_VERSION) -> None:
    """Raise :class:`ManifestValidationError` listing every problem of every object."""
    problems = [p for obj in objs for p in object_problems(obj, crd_dir, k8s_version)]
    if problems:
        raise ManifestValidationError(problems)
