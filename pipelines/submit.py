"""``rner pipeline submit``: upload the compiled pipeline as a new version and start a run (or a recurring run).

Talks to a Kubeflow Pipelines endpoint through ``kfp.Client`` (KFP v2beta1 REST API):

1. ``GET /apis/v2beta1/pipelines?filter=<display_name == name>&namespace=..`` finds the pipeline;
   absent: ``POST /apis/v2beta1/pipelines/upload`` creates it with the package as its first version
   (``GET .../pipelines/{id}/versions`` gives that version's id); present:
   ``POST /apis/v2beta1/pipelines/upload_version`` adds the package as version ``version_name``;
2. ``GET /apis/v2beta1/experiments?filter=..`` finds the experiment, ``POST /apis/v2beta1/experiments``
   creates it when absent;
3. ``POST /apis/v2beta1/runs`` starts a run of that version, or ``POST /apis/v2beta1/recurringruns``
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
import datetime as dt
import difflib
import io
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.reasoning_ner_pipeline import COMPILED, PIPELINE_NAME

HOST_ENV = "KF_PIPELINES_ENDPOINT"  # kfp's own variable
DEFAULT_TOKEN_ENV = "KF_PIPELINES_TOKEN"
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp's own variable
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
NAMESPACE_ENV = "RNER_KFP_NAMESPACE"
EXPERIMENT_ENV = "RNER_KFP_EXPERIMENT"
SERVICE_ACCOUNT_ENV = "RNER_KFP_SERVICE_ACCOUNT"
DEFAULT_EXPERIMENT = "reasoning-ner"


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


def parse_params(items: list[str] | dict[str, Any] | None, package: str | os.PathLike[str] = COMPILED) -> dict[str, Any]:
    """``NAME=VALUE`` strings (or a dict) -> values typed by the pipeline's parameter definitions."""
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
    defs = pipeline_parameters(package)
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


def default_version_name(now: dt.datetime | None = None) -> str:
    from reasoning_ner import __version__

    now = now or dt.datetime.now(dt.timezone.utc)
    return f"v{__version__}-{now:%Y%m%d-%H%M%S}"


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
        return kfp.Client(**kwargs)


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
    client: Any = None,
) -> SubmitResult:
    """Upload ``package`` as a version of ``pipeline_name`` (creating the pipeline if absent), then
    start a run of it in ``experiment``, or a recurring run when ``recurring_cron`` is given."""
    package = Path(package)
    if not package.is_file():
        raise SubmitError(f"pipeline package {package} does not exist (run `rner pipeline compile`)")
    typed = parse_params(params, package)  # refuse bad parameters before touching the server
    cron = normalize_cron(recurring_cron) if recurring_cron else None
    version_name = version_name or default_version_name()
    description = description or f"ReasoningNER pipeline, package {package.name}"
    client = client or make_client(host, token, namespace)
    try:
        return _submit(client, host, namespace, experiment, service_account, typed, cron, package, pipeline_name,
                       version_name, run_name, description, max_concurrency)
    except Exception as exc:
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
            run_name: str | None, description: str, max_concurrency: int) -> SubmitResult:
    printed = io.StringIO()  # kfp prints UI links; the caller gets the ids in the result instead
    with contextlib.redirect_stdout(printed):
        found = client.list_pipelines(filter=_name_filter(pipeline_name), namespace=namespace, page_size=2)
        pipelines = found.pipelines or []
        if len(pipelines) > 1:
            raise SubmitError(f"{len(pipelines)} pipelines are named {pipeline_name!r}; names must be unique")
        created = not pipelines
        if created:
            pipeline = client.upload_pipeline(str(package), pipeline_name=pipeline_name, description=description,
                                              namespace=namespace)
            pipeline_id = pipeline.pipeline_id
            versions = client.list_pipeline_versions(pipeline_id, sort_by="created_at desc", page_size=1)
            if not versions.pipeline_versions:
                raise SubmitError(f"pipeline {pipeline_id} was created without a version")
            version = versions.pipeline_versions[0]
            version_name = version.display_name or pipeline_name
        else:
            pipeline_id = pipelines[0].pipeline_id
            version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id,
                                                     description=description)
        version_id = version.pipeline_version_id
        exp = client.create_experiment(experiment, namespace=namespace)
        run_name = run_name or f"{pipeline_name} {version_name}"
        result = SubmitResult(host=host, namespace=namespace, pipeline_id=pipeline_id, pipeline_version_id=version_id,
                              version_name=version_name, created_pipeline=created, experiment_id=exp.experiment_id,
                              cron=cron, parameters=typed, service_account=service_account)
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
