"""What ``rner preflight`` checks: a :class:`PreflightTarget`, resolved to concrete names from the
configuration (:func:`target_from_config`) or from Helm values as the chart resolves them
(:func:`target_from_values`), then the command line's overrides (:func:`build_target`)."""

from __future__ import annotations

import configparser
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from ..config.profiles import deep_merge
from .kubeapi import read_yaml_mapping

#: The pipeline's default GPU pool (run parameters gpu_node_selector / gpu_tolerations).
DEFAULT_GPU_NODE_SELECTOR: dict[str, str] = {"nvidia.com/gpu.present": "true"}
DEFAULT_GPU_TOLERATIONS: list[dict[str, Any]] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
DEFAULT_ACCELERATOR = "nvidia.com/gpu"
#: The pipeline's S3 Secret keys (pipelines.reasoning_ner_pipeline.SECRETS["s3"]).
PIPELINE_S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")
KSERVE_VERSION = "v0.21.0"  # the runtime image the chart pins (kserve/huggingfaceserver:v0.21.0)
S3_ENDPOINT_ANNOTATION = "serving.kserve.io/s3-endpoint"

Status = Literal["ok", "warn", "fail", "skipped"]

#: (id, title) of every row, in the order they are printed.
ROWS: tuple[tuple[str, str], ...] = (
    ("kube-api", "Kubernetes API"),
    ("namespaces", "Namespaces"),
    ("serving-sa", "Serving ServiceAccount"),
    ("runner-sa", "Pipeline runner ServiceAccount"),
    ("s3-secret", "S3 Secret (KServe)"),
    ("pipeline-s3-secret", "S3 Secret (pipeline)"),
    ("served-model", "Served model (storageUri)"),
    ("registry", "Model registry"),
    ("dvc-remote", "DVC remote"),
    ("storageclass", "StorageClass"),
    ("gpu-training", "GPU nodes (training)"),
    ("gpu-serving", "GPU nodes (serving)"),
    ("kfp", "KFP backend"),
    ("kserve-crds", "KServe CRDs"),
    ("kserve-runtime", "Serving runtime"),
)
ROW_IDS = tuple(r for r, _ in ROWS)
TITLES = dict(ROWS)


class PreflightError(ValueError):
    """The inputs of a preflight are unusable (a values file, a JSON flag); the message names them."""


# ------------------------------------------------------------------------------------ inputs


@dataclass
class GpuPool:
    """Where GPU pods must land: every node selector label, every taint tolerated, the resource allocatable."""

    name: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    resource: str = DEFAULT_ACCELERATOR
    count: int = 1
    settings: str = "run parameters gpu_node_selector / gpu_tolerations / accelerator_type"


@dataclass
class PreflightTarget:
    """Everything the rows check, resolved to concrete names."""

    serving_namespace: str
    serving_service_account: str
    s3_secret: str | None
    storage_uri: str
    kfp_namespace: str
    runner_service_account: str
    name: str = "reasoning-ner"
    s3_access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    s3_secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"
    #: What the values intend for KServe's serving.kserve.io/s3-* annotations (compared with the live Secret).
    s3_endpoint: str | None = None
    s3_use_https: bool = True
    s3_region: str | None = None
    pipeline_s3_secret: str | None = "reasoning-ner-s3"
    runtime: str | None = "kserve-huggingfaceserver"
    model_format: str = "huggingface"
    kfp_host: str | None = None
    registry_uri: str | None = None
    dvc_remote: str | None = None
    storage_class: str | None = None
    #: Only the multi-node path's shared PVC needs a StorageClass (the training workspace is an emptyDir).
    needs_storage_class: bool = False
    gpu_pools: list[GpuPool] = field(default_factory=list)
    #: Reach S3 through this URL instead of the annotated endpoint (e.g. a kubectl port-forward).
    s3_endpoint_override: str | None = None
    skip: list[str] = field(default_factory=list)
    origin: str = "configuration"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_pool(node_selector: Mapping[str, str] | None = None, tolerations: list[dict[str, Any]] | None = None,
                  resource: str | None = None, count: int | None = None) -> GpuPool:
    return GpuPool("training", dict(DEFAULT_GPU_NODE_SELECTOR if node_selector is None else node_selector),
                   list(DEFAULT_GPU_TOLERATIONS if tolerations is None else tolerations),
                   resource or DEFAULT_ACCELERATOR, 1 if count is None else count)


def _serving_pool(gpus: int, resource: str, selector: Mapping[str, str], tolerations: list[dict[str, Any]]) -> GpuPool | None:
    if gpus <= 0:
        return None
    return GpuPool("serving", dict(selector), list(tolerations), resource, gpus,
                   "serving.predictor.nodeSelector / tolerations / gpuResourceName")


def target_from_config(cfg: Any) -> PreflightTarget:
    """From the configuration: ``deploy.serving`` (names, namespace, S3 settings, runtime, predictor
    GPUs) and ``promotion.registry_uri``; the KFP run namespace and runner default as the chart's do."""
    s = cfg.deploy.serving
    st, p = s.storage, s.predictor
    pools = [training_pool()]
    serving = _serving_pool(p.gpus, p.gpu_resource_name, p.node_selector, p.tolerations)
    if serving:
        pools.append(serving)
    return PreflightTarget(
        name=s.name, serving_namespace=s.namespace, serving_service_account=st.service_account_name,
        s3_secret=st.s3_secret_name, storage_uri=st.storage_uri, kfp_namespace="kubeflow",  # the chart's kfp.namespace
        runner_service_account=f"{s.name}-pipeline-runner", s3_access_key_id_key=st.s3_access_key_id_key,
        s3_secret_access_key_key=st.s3_secret_access_key_key, s3_endpoint=st.s3_endpoint, s3_use_https=st.s3_use_https,
        s3_region=st.s3_region, pipeline_s3_secret=st.s3_secret_name, runtime=p.runtime, model_format=p.model_format,
        kfp_host=os.environ.get("KF_PIPELINES_ENDPOINT") or None, registry_uri=cfg.promotion.registry_uri,
        gpu_pools=pools, origin=f"configuration (profile {cfg.profile})")


_MISSING = object()


def _at(values: Mapping[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    node: Any = values
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            if default is _MISSING:
                raise PreflightError(f"the values lack {dotted} (pass the chart with --chart so its defaults apply)")
            return default
        node = node[key]
    return node


def target_from_values(values: Mapping[str, Any], release: str = "reasoning-ner", namespace: str | None = None,
                       origin: str = "Helm values") -> PreflightTarget:
    """From the chart's values, resolved as the chart's helpers resolve them (``rner.name``,
    ``rner.namespace``, ``rner.kfpNamespace``, ``rner.pipelineRunnerSA``); ``namespace`` is the
    release namespace (``helm -n``)."""
    name = _at(values, "serving.name", "") or release
    ns = _at(values, "serving.namespace", "") or namespace or "default"
    pred = _at(values, "serving.predictor", {}) or {}
    pools = [training_pool()]
    serving = _serving_pool(int(pred.get("gpus") or 0), pred.get("gpuResourceName") or DEFAULT_ACCELERATOR,
                            pred.get("nodeSelector") or {}, pred.get("tolerations") or [])
    if serving:
        pools.append(serving)
    tests = _at(values, "tests.preflight", {}) or {}
    shared_pvc = _at(values, "multiNode.sharedPvc", {}) or {}
    multi_node = bool(_at(values, "multiNode.enabled", False)) and bool(shared_pvc.get("create", True))
    return PreflightTarget(
        name=name, serving_namespace=ns,
        serving_service_account=_at(values, "serving.storage.serviceAccountName"),
        s3_secret=_at(values, "serving.storage.s3SecretName", None) or None,
        storage_uri=_at(values, "serving.storage.storageUri"),
        s3_access_key_id_key=_at(values, "serving.storage.s3AccessKeyIdKey", "AWS_ACCESS_KEY_ID"),
        s3_secret_access_key_key=_at(values, "serving.storage.s3SecretAccessKeyKey", "AWS_SECRET_ACCESS_KEY"),
        s3_endpoint=_at(values, "serving.storage.s3Endpoint", None) or None,
        s3_use_https=bool(_at(values, "serving.storage.s3UseHttps", True)),
        s3_region=_at(values, "serving.storage.s3Region", None) or None,
        kfp_namespace=_at(values, "kfp.namespace", "") or ns,
        runner_service_account=_at(values, "serviceAccounts.pipelineRunner.name", "") or f"{name}-pipeline-runner",
        pipeline_s3_secret=_at(values, "secrets.s3.name", None) or None,
        runtime=pred.get("runtime"),  # Helm drops null keys from .Values: absent = null
        model_format=pred.get("modelFormat") or "huggingface",
        kfp_host=_at(values, "kfp.host", None) or None,
        registry_uri=tests.get("registryUri") or None, dvc_remote=tests.get("dvcRemote") or None,
        storage_class=shared_pvc.get("storageClassName") or None, needs_storage_class=multi_node,
        gpu_pools=pools, skip=list(tests.get("skip") or []), origin=origin)


def load_values(files: Iterable[str | os.PathLike[str]], chart: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The chart's values.yaml (when ``chart`` is given) with each file merged over it in order, as ``helm -f``."""
    merged: dict[str, Any] = {}
    sources = ([Path(chart) / "values.yaml"] if chart else []) + [Path(f) for f in files]
    for path in sources:
        merged = deep_merge(merged, read_yaml_mapping(path, "values file", PreflightError))
    schema = Path(chart) / "values.schema.json" if chart else None
    if schema is not None and schema.is_file():  # what `helm install` would refuse, refused here first (exit 2)
        check_values_schema(merged, schema)
    return merged


def check_values_schema(values: Mapping[str, Any], schema_path: Path) -> None:
    """Raise PreflightError listing every place ``values`` breaks the chart's values.schema.json."""
    import jsonschema

    validator = jsonschema.Draft7Validator(json.loads(schema_path.read_text()))
    problems = sorted(f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
                      for e in validator.iter_errors(values))
    if problems:
        raise PreflightError(f"the values break the chart's schema ({schema_path}): " + "; ".join(problems[:10])
                             + (f"; and {len(problems) - 10} more" if len(problems) > 10 else ""))


def dvc_default_remote(repo: str | os.PathLike[str] = ".", name: str | None = None) -> str | None:
    """The URL of DVC remote ``name`` (default: core.remote) from ``<repo>/.dvc/config``; None when absent."""
    path = Path(repo) / ".dvc" / "config"
    if not path.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error:
        return None
    name = name or parser.get("core", "remote", fallback=None)
    if not name:
        return None
    return parser.get(f"'remote \"{name}\"'", "url", fallback=None)


def parse_json_flag(text: str, name: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PreflightError(f"{name} is not JSON: {exc}") from exc
    if not isinstance(value, kind):
        raise PreflightError(f"{name} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def build_target(cfg: Any, values_files: Iterable[str | os.PathLike[str]] = (), chart: str | os.PathLike[str] | None = None,
                 release: str = "reasoning-ner", namespace: str | None = None, *, kfp_namespace: str | None = None,
                 kfp_host: str | None = None, registry: str | None = None, dvc_remote: str | None = None,
                 storage_class: str | None = None, gpu_node_selector: str | None = None,
                 gpu_tolerations: str | None = None, accelerator: str | None = None, gpus: int | None = None,
                 s3_endpoint: str | None = None, skip: Iterable[str] = ()) -> PreflightTarget:
    """The target of ``rner preflight``: Helm values (``values_files`` over the chart's defaults) or the
    configuration, then the command line's overrides. JSON flags are parsed here."""
    files = [str(f) for f in values_files]
    if files:
        target = target_from_values(load_values(files, chart), release, namespace, origin=f"values {', '.join(files)}")
    else:
        target = target_from_config(cfg)
        if namespace:
            target.serving_namespace = target.kfp_namespace = namespace
    unknown = sorted(set(skip) - set(ROW_IDS))
    if unknown:
        raise PreflightError(f"--skip {', '.join(unknown)}: not a check (checks: {', '.join(ROW_IDS)})")
    if dvc_remote and "://" not in dvc_remote and "/" not in dvc_remote:  # a remote name: its URL from .dvc/config
        url = dvc_default_remote(".", dvc_remote)
        if url is None:
            raise PreflightError(f"--dvc-remote {dvc_remote!r}: no such remote in ./.dvc/config")
        dvc_remote = url
    changes = {"kfp_namespace": kfp_namespace, "kfp_host": kfp_host, "registry_uri": registry, "dvc_remote": dvc_remote,
               "storage_class": storage_class, "s3_endpoint_override": s3_endpoint}
    target = replace(target, **{k: v for k, v in changes.items() if v}, skip=[*target.skip, *skip],
                     needs_storage_class=target.needs_storage_class or bool(storage_class))
    if gpu_node_selector or gpu_tolerations or accelerator or gpus is not None:
        pool = training_pool(parse_json_flag(gpu_node_selector, "--gpu-node-selector", dict) if gpu_node_selector else None,
                             parse_json_flag(gpu_tolerations, "--gpu-tolerations", list) if gpu_tolerations else None,
                             accelerator, gpus)
        target.gpu_pools = [pool, *(p for p in target.gpu_pools if p.name != "training")]
    return target
