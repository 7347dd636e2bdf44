"""``rner pipeline submit``: upload the compiled pipeline as a new version and start a run (or a recurring run).

Talks to a Kubeflow Pipelines endpoint through ``kfp.Client`` (KFP v2beta1 REST API):

0. the package is prepared: its stable image references (``reasoning_ner.images.image(name)``) are
   rewritten to the images of one build (``image_tag``, e.g. ``sha-<12 hex>`` from main, and/or
   ``image_digests``; :func:`reasoning_ner.images.rewrite_references`, the same rewrite the chart's
   registration does) and the version is named after the result,
   ``<package version>-<12 hex of its sha256>`` (:func:`reasoning_ner.images.content_version`);
1. ``GET /apis/v2beta1/healthz`` gives the backend's version (``tag_name``), which must be at least
   :data:`MIN_KFP_BACKEND_VERSION` (the pipeline's GPU scheduling and optional Secrets need it);
2. ``GET /apis/v2beta1/pipelines?filter=<display_name == name>&namespace=..`` finds the pipeline;
   absent: ``POST /apis/v2beta1/pipelines`` creates it (no version yet); then
   ``GET .../pipelines/{id}/versions?filter=<display_name == version>`` looks for the version: an
   unchanged pipeline (same content, same images) reuses it, otherwise
   ``POST /apis/v2beta1/pipelines/upload_version`` uploads the prepared package under that name;
3. ``GET /apis/v2beta1/experiments?filter=..`` finds the experiment, ``POST /apis/v2beta1/experiments``
   creates it when absent;
4. ``POST /apis/v2beta1/runs`` starts a run of that version, or ``POST /apis/v2beta1/recurringruns``
   schedules it (``cron_schedule``; KFP's cron has a seconds field, a 5-field expression gets ``0``
   prepended), with the run parameters typed from the package's own parameter definitions and the
   run's Kubernetes service account.

Authentication: a Kubeflow Pipelines token (a ServiceAccount token with audience
``pipelines.kubeflow.org``) sent as ``Authorization: Bearer``, from an environment variable or from a
token file (re-read on every request, as kubelet rotates projected tokens; in a pod the projected
``/var/run/secrets/kubeflow/pipelines/token`` is used when present). No token: no header (e.g. a
port-forward to a single-user install).
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipelines.reasoning_ner_pipeline import COMPILED, PIPELINE_NAME
from reasoning_ner.images import content_version, rewrite_references
from reasoning_ner.k8s.kfp_backend import KFP_BACKEND_FEATURES, MIN_KFP_BACKEND_VERSION, missing_features, version_tuple

HOST_ENV = "KF_PIPELINES_ENDPOINT"  # kfp's own variable
DEFAULT_TOKEN_ENV = "KF_PIPELINES_TOKEN"
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp's own variable
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
NAMESPACE_ENV = "RNER_KFP_NAMESPACE"
EXPERIMENT_ENV = "RNER_KFP_EXPERIMENT"
SERVICE_ACCOUNT_ENV = "RNER_KFP_SERVICE_ACCOUNT"
DEFAULT_EXPERIMENT = "reasoning-ner"
IMAGE_TAG_ENV = "RNER_IMAGE_TAG"  # e.g. sha-0123456789ab (a build of main)
IMAGE_DIGESTS_ENV = "RNER_IMAGE_DIGESTS"  # e.g. cpu=sha256:...,train-gpu=sha256:...
IMAGE_REGISTRY_ENV = "RNER_IMAGE_REGISTRY"  # a mirror of ghcr.io/reasoning-ner
SKIP_VERSION_CHECK_ENV = "RNER_KFP_SKIP_VERSION_CHECK"

#: The oldest Kubeflow Pipelines backend the compiled pipeline runs correctly on (2.15.0), and the
#: features behind it -> their first backend release. Read from kubeflow/pipelines at
#: 7b70c7b95f6832772efd6fd0029a4024491a0f44 (backend/src/v2/driver/k8s.go, `git tag --contains` of each
#: change: nodeSelectorJson/tolerationJson from parameters #11770 and list tolerations 90909fc in 2.5.0,
#: empty tolerations #11898 in 2.14.0, optional Secrets as env #12216 in 2.15.0). Kept in the library
#: (reasoning_ner.k8s.kfp_backend, imported above) so `rner preflight` checks the same:
#: pipelines.submit.MIN_KFP_BACKEND_VERSION is that constant.


class SubmitError(ValueError):
    """A submission that cannot be made as asked; the message says what to change."""


@dataclass
class SubmitResult:
    host: str
    namespace: str | None
    pipeline_id: str
    pipeline_version_id: str
    version_name: str
    created_pipeline: bool
    experiment_id: str
    run_id: str | None = None
    recurring_run_id: str | None = None
    cron: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    service_account: str | None = None
    uploaded_version: bool = True  # False: an identical version was already registered and is reused
    kfp_version: str | None = None  # the backend's tag_name (None when the check was skipped)
    images: list[str] = field(default_factory=list)  # the project images the uploaded pipeline runs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------- inputs


@dataclass
class Token:
    value: str | None = None
    path: str | None = None
    source: str = "none"


def resolve_token(token_env: str | None = None, token_file: str | os.PathLike[str] | None = None) -> Token:
    """The token to send: ``token_file`` if given, else ``$token_env``, else the in-pod projected token.

    ``token_env`` defaults to ``KF_PIPELINES_TOKEN``; naming another variable that is unset is an error.
    """
    if token_file:
        path = Path(token_file)
        if not path.is_file() or not path.read_text().strip():
            raise SubmitError(f"token file {path} does not exist or is empty")
        return Token(path=str(path), source=f"file {path}")
    name = token_env or DEFAULT_TOKEN_ENV
    value = os.environ.get(name, "").strip()
    if value:
        return Token(value=value, source=f"${name}")
    if token_env and token_env != DEFAULT_TOKEN_ENV:
        raise SubmitError(f"--token-env {token_env}: that environment variable is not set")
    projected = os.environ.get(TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH
    if Path(projected).is_file():
        return Token(path=projected, source=f"file {projected}")
    return Token()


def pipeline_parameters(package: str | os.PathLike[str] = COMPILED) -> dict[str, dict[str, Any]]:
    """The root parameter definitions of a compiled pipeline (name -> {parameterType, defaultValue, ...})."""
    doc = next(yaml.safe_load_all(Path(package).read_text()))
    return dict(doc["root"]["inputDefinitions"].get("parameters", {}))


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def parse_params(items: list[str] | dict[str, Any] | None, package: str | os.PathLike[str] = COMPILED,
                 defs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``NAME=VALUE`` strings (or a dict) -> values typed by the pipeline's parameter definitions
    (``defs``, by default those of the compiled ``package``)."""
    if not items:
        return {}
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        for item in items:
            name, sep, raw = item.partition("=")
            if not sep or not name.strip():
                raise SubmitError(f"--param {item!r} is not NAME=VALUE")
            pairs.append((name.strip(), raw))
    defs = defs if defs is not None else pipeline_parameters(package)
    out: dict[str, Any] = {}
    for name, raw in pairs:
        if name not in defs:
            close = difflib.get_close_matches(name, defs, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(defs))}"
            raise SubmitError(f"pipeline has no parameter {name!r}{hint}")
        kind = defs[name]["parameterType"]
        out[name] = _typed(name, kind, raw)
    return out


def _typed(name: str, kind: str, raw: Any) -> Any:
    if not isinstance(raw, str):
        value = raw
    elif kind == "STRING":
        return raw
    elif kind == "BOOLEAN":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise SubmitError(f"{name} is a boolean: use true or false, not {raw!r}")
    elif kind in ("NUMBER_INTEGER", "NUMBER_DOUBLE"):
        try:
            value = float(raw) if kind == "NUMBER_DOUBLE" else int(raw)
        except ValueError:
            raise SubmitError(f"{name} is {'a number' if kind == 'NUMBER_DOUBLE' else 'an integer'}, not {raw!r}") from None
    elif kind in ("STRUCT", "LIST"):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise SubmitError(f"{name} takes JSON ({'an object' if kind == 'STRUCT' else 'a list'}): {exc}") from None
    else:
        raise SubmitError(f"{name}: unsupported parameter type {kind}")
    expected = {"STRING": str, "BOOLEAN": bool, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": (int, float),
                "STRUCT": dict, "LIST": list}[kind]
    if not isinstance(value, expected) or (kind != "BOOLEAN" and isinstance(value, bool)):
        raise SubmitError(f"{name} must be {kind}, got {value!r}")
    return float(value) if kind == "NUMBER_DOUBLE" else value


def normalize_cron(expr: str) -> str:
    """KFP schedules with 6-field cron (seconds first); a 5-field expression gets ``0`` seconds."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise SubmitError(f"cron {expr!r} must have 5 fields (min hour dom month dow) or 6 (sec first)")
    return " ".join(fields)


def parse_digests(text: str | None) -> dict[str, str]:
    """``cpu=sha256:...,train-gpu=sha256:...`` -> {image name: digest}."""
    out: dict[str, str] = {}
    for item in (text or "").replace(";", ",").split(","):
        if not item.strip():
            continue
        name, sep, digest = item.partition("=")
        if not sep:
            raise SubmitError(f"image digest {item!r} is not NAME=sha256:<hex> (NAME: cpu, train-gpu, serve)")
        out[name.strip()] = digest.strip()
    return out


def prepare_package(package: str | os.PathLike[str], tag: str | None = None, digests: Mapping[str, str] | None = None,
                    registry: str | None = None) -> tuple[str, str]:
    """(the YAML to upload, its content-derived version name): the compiled pipeline with its image
    references rewritten to ``tag`` / ``digests`` (unchanged when both are empty)."""
    text = Path(package).read_text()
    try:
        rewritten = rewrite_references(text, tag=tag, digests=digests, **({"registry": registry} if registry else {}))
    except ValueError as exc:
        raise SubmitError(f"image references: {exc}") from None
    return rewritten, content_version(rewritten)


def project_images(text: str) -> list[str]:
    """The project image references in a pipeline YAML (what its steps will pull)."""
    return sorted(set(re.findall(r"[\w.:/-]+/reasoning-ner-[a-z-]+:[\w.-]+(?:@sha256:[0-9a-f]{64})?", text)))


def backend_version(client: Any) -> str | None:
    """``tag_name`` of ``GET /apis/v2beta1/healthz``: the API server's TAG_NAME, set by KFP's release
    builds ("unknown" on a dev build). kfp's generated model drops the field, so the raw JSON is read."""
    resp = client._healthz_api.healthz_service_get_healthz(_preload_content=False)
    try:
        return json.loads(resp.data or b"{}").get("tag_name")
    except ValueError:
        return None


def check_backend_version(found: str | None, host: str = "", minimum: str = MIN_KFP_BACKEND_VERSION) -> None:
    """Refuse a backend older than ``minimum`` (or one that does not say its version)."""
    have = version_tuple(found)
    if have is not None and have >= version_tuple(minimum):
        return
    missing = missing_features(found)
    where = f" at {host}" if host else ""
    raise SubmitError(
        f"Kubeflow Pipelines backend{where} reports version {found!r} (healthz tag_name); this pipeline needs "
        f">= {minimum}: " + "; ".join(missing) + f". Upgrade Kubeflow Pipelines, or set {SKIP_VERSION_CHECK_ENV}=1 "
        "to submit anyway (GPU steps may then be scheduled without the node selector/tolerations)")


# ------------------------------------------------------------------------------------- client


def make_client(host: str, token: Token | None = None, namespace: str | None = None) -> Any:
    """``kfp.Client`` for ``host`` with a bearer token (or none)."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    if not host:
        raise SubmitError(f"no Kubeflow Pipelines endpoint: pass --host or set ${HOST_ENV}")
    token = token or Token()
    kwargs: dict[str, Any] = {"host": host}
    if token.value:
        kwargs["existing_token"] = token.value
    elif token.path:
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(token.path)
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        try:
            return kfp.Client(**kwargs)
        except Exception as exc:  # the client's health check: connection refused, DNS, TLS
            raise _unreachable(exc, host) or exc


def _unreachable(exc: BaseException, host: str) -> SubmitError | None:
    """A SubmitError naming the endpoint when ``exc`` says it could not be reached, else None."""
    import urllib3

    if not isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return None
    reason = getattr(exc, "reason", None) or exc
    return SubmitError(f"cannot reach Kubeflow Pipelines at {host}: {reason} (check --host / ${HOST_ENV}, "
                       "or reach the API through `kubectl port-forward`)")


def _name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def submit(
    host: str,
    *,
    token: Token | None = None,
    namespace: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    service_account: str | None = None,
    params: list[str] | dict[str, Any] | None = None,
    recurring_cron: str | None = None,
    package: str | os.PathLike[str] = COMPILED,
    pipeline_name: str = PIPELINE_NAME,
    version_name: str | None = None,
    run_name: str | None = None,
    description: str | None = None,
    max_concurrency: int = 1,
    image_tag: str | None = None,
    image_digests: Mapping[str, str] | None = None,
    image_registry: str | None = None,
    check_version: bool | None = None,
    client: Any = None,
) -> SubmitResult:
    """Upload ``package`` (image references rewritten to ``image_tag`` / ``image_digests``) as a
    version of ``pipeline_name`` named after its content, creating the pipeline if absent and reusing
    an identical version, then start a run of it in ``experiment``, or a recurring run when
    ``recurring_cron`` is given. ``image_*`` default to $RNER_IMAGE_TAG, $RNER_IMAGE_DIGESTS and
    $RNER_IMAGE_REGISTRY; the backend version check is skipped with ``check_version=False`` or
    $RNER_KFP_SKIP_VERSION_CHECK=1."""
    package = Path(package)
    if not package.is_file():
        raise SubmitError(f"pipeline package {package} does not exist (run `rner pipeline compile`)")
    typed = parse_params(params, package)  # refuse bad parameters before touching the server
    cron = normalize_cron(recurring_cron) if recurring_cron else None
    if image_digests is None:
        image_digests = parse_digests(os.environ.get(IMAGE_DIGESTS_ENV))
    content, content_name = prepare_package(package, image_tag or os.environ.get(IMAGE_TAG_ENV) or None,
                                            image_digests, image_registry or os.environ.get(IMAGE_REGISTRY_ENV) or None)
    # Only a content-derived name may be reused: an explicit one could name different content.
    reuse = not version_name
    version_name = version_name or content_name
    if check_version is None:
        check_version = os.environ.get(SKIP_VERSION_CHECK_ENV, "").strip().lower() not in ("1", "true", "yes")
    description = description or f"ReasoningNER pipeline, package {package.name}"
    client = client or make_client(host, token, namespace)
    try:
        with tempfile.TemporaryDirectory(prefix="rner-submit-") as tmp:
            prepared = Path(tmp) / f"{pipeline_name}-{version_name}.yaml"
            prepared.write_text(content)
            result = _submit(client, host, namespace, experiment, service_account, typed, cron, prepared,
                             pipeline_name, version_name, run_name, description, max_concurrency, check_version, reuse)
        result.images = project_images(content)
        return result
    except Exception as exc:
        unreachable = _unreachable(exc, host)
        if unreachable is not None:
            raise unreachable from exc
        status = getattr(exc, "status", None)
        if status is None or type(exc).__name__ != "ApiException":
            raise
        try:
            message = json.loads(exc.body).get("message", "")
        except (TypeError, ValueError, AttributeError):
            message = str(exc.body or "")[:500]
        hint = " (check the token: a Kubeflow Pipelines token with audience pipelines.kubeflow.org)" \
            if status in (401, 403) else ""
        raise SubmitError(f"Kubeflow Pipelines at {host} answered {status} {exc.reason}: {message}{hint}") from exc


def _submit(client: Any, host: str, namespace: str | None, experiment: str, service_account: str | None,
            typed: dict[str, Any], cron: str | None, package: Path, pipeline_name: str, version_name: str,
            run_name: str | None, description: str, max_concurrency: int, check_version: bool,
            reuse: bool = True) -> SubmitResult:
    printed = io.StringIO()  # kfp prints UI links; the caller gets the ids in the result instead
    with contextlib.redirect_stdout(printed):
        kfp_version = None
        if check_version:
            kfp_version = backend_version(client)
            check_backend_version(kfp_version, host)
        found = client.list_pipelines(filter=_name_filter(pipeline_name), namespace=namespace, page_size=2)
        pipelines = found.pipelines or []
        if len(pipelines) > 1:
            raise SubmitError(f"{len(pipelines)} pipelines are named {pipeline_name!r}; names must be unique")
        created = not pipelines
        version = None
        if created:
            # The pipeline alone (POST /pipelines), so its only version is the content-named one below
            # (an upload would add a first version named after the pipeline with the same content).
            import kfp_server_api

            pipeline = client._pipelines_api.pipeline_service_create_pipeline(kfp_server_api.V2beta1Pipeline(
                display_name=pipeline_name, name=pipeline_name, description=description, namespace=namespace))
            pipeline_id = pipeline.pipeline_id
        else:
            pipeline_id = pipelines[0].pipeline_id
            if reuse:
                listed = client.list_pipeline_versions(pipeline_id, filter=_name_filter(version_name), page_size=1)
                version = (listed.pipeline_versions or [None])[0]
        uploaded = version is None
        if uploaded:
            version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id,
                                                     description=description)
        version_id = version.pipeline_version_id
        exp = client.create_experiment(experiment, namespace=namespace)
        run_name = run_name or f"{pipeline_name} {version_name}"
        result = SubmitResult(host=host, namespace=namespace, pipeline_id=pipeline_id, pipeline_version_id=version_id,
                              version_name=version_name, created_pipeline=created, experiment_id=exp.experiment_id,
                              cron=cron, parameters=typed, service_account=service_account,
                              uploaded_version=uploaded, kfp_version=kfp_version)
        if cron:
            rr = client.create_recurring_run(
                experiment_id=exp.experiment_id, job_name=run_name, description=description, cron_expression=cron,
                max_concurrency=max_concurrency, no_catchup=True, params=typed, pipeline_id=pipeline_id,
                version_id=version_id, enabled=True, service_account=service_account)
            result.recurring_run_id = rr.recurring_run_id
        else:
            run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name, params=typed,
                                      pipeline_id=pipeline_id, version_id=version_id, service_account=service_account)
            result.run_id = run.run_id
    return result
