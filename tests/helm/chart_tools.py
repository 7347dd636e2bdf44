"""Helpers of the chart tests: render the chart offline with the Helm SDK, validate objects, find
the linters, and a stub HTTP server (Kubernetes API for `lookup`, KFP API, the NER endpoint).

The Helm SDK is ``helm-python-sdk`` (Helm v4 compiled into a shared library): ``helm.lint``,
``helm.Chart.load(path).render(values, name=, namespace=)`` (offline: ``lookup`` returns nothing)
and ``helm.Config(...).render(chart, ...)``, which renders against an API server, so ``lookup``
can be exercised with a stub API server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import yaml

try:
    import helm_python as helm
except ImportError as exc:  # a missing pin must fail loudly, not skip the whole chart suite
    raise ImportError("the chart tests need helm-python-sdk==0.2.2 (Helm v4 SDK) in the venv: "
                      "it is pinned in pyproject.toml's dev extras; re-run `make venv`") from exc

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "reasoning-ner"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
CRD_DIR = REPO_ROOT.parent / "shared" / "k8s" / "crds"
RELEASE = "reasoning-ner"
NAMESPACE = "reasoning-ner"
K8S_VERSION = "1.33"
#: Paths of the rendered templates that are not Kubernetes objects.
NOT_OBJECTS = {"NOTES.txt"}


# ------------------------------------------------------------------------------------ rendering


@functools.lru_cache(maxsize=1)
def chart() -> Any:
    return helm.Chart.load(str(CHART))


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def chart_defaults() -> dict[str, Any]:
    """values.yaml as written (PyYAML keeps keys whose value is null, Helm drops them)."""
    return load_values(CHART / "values.yaml")


@functools.lru_cache(maxsize=256)
def _render_cached(values_json: str, name: str, namespace: str) -> tuple[tuple[str, str], ...]:
    out = chart().render(json.loads(values_json), name=name, namespace=namespace)
    return tuple(sorted(out.items()))


def render_files(values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """{template path relative to the chart: rendered text} (cached per distinct input)."""
    rendered = _render_cached(json.dumps(values or {}, sort_keys=True), name, namespace)
    return {path.split("/", 1)[1]: text for path, text in rendered}


def parse_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object, in template order."""
    objs: list[dict[str, Any]] = []
    for path, text in render_files(values, name, namespace).items():
        if Path(path).name in NOT_OBJECTS:
            continue
        objs.extend(parse_docs(text))
    return objs


def template_objects(template: str, values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
    """The objects of one template, e.g. ``templates/networkpolicy.yaml``."""
    files = render_files(values, **kw)
    return parse_docs(files.get(template, ""))


def by_kind(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = by_kind(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def render_error(values: dict[str, Any], **kw: Any) -> str:
    """The message of a render that must fail (schema violation or a template `fail`)."""
    try:
        chart().render(values, name=kw.get("name", RELEASE), namespace=kw.get("namespace", NAMESPACE))
    except (helm.HelmValuesError, helm.HelmRenderError) as exc:
        return str(exc)
    raise AssertionError(f"rendering succeeded but should have failed for {values}")


# ------------------------------------------------------------------------------------ builder side


def serving_values(values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The `serving` section as the chart sees it, in the form ServingSettings.from_helm_values reads.

    Helm's own coalescing (``Chart.merge_values``) merges the given values over values.yaml; a key
    that Helm dropped because it is null becomes None again (values.yaml lists every key), and the
    empty defaults the chart fills in (name, namespace, transformer image, pull Secrets) are filled the
    same way.
    """
    merged = chart().merge_values(values or {})["serving"]
    reference = chart_defaults()["serving"]

    def fill(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
        out = dict(got)
        for key, value in ref.items():
            if key not in out:
                out[key] = None
            elif isinstance(value, dict) and value and isinstance(out[key], dict):
                # maps with fixed keys (sections) recurse; free maps (labels, env, nodeSelector) do not
                if key not in {"labels", "env", "nodeSelector", "prometheusPodLabels"}:
                    out[key] = fill(value, out[key])
        return out

    serving = fill(reference, merged)
    serving["name"] = serving.get("name") or name
    serving["namespace"] = serving.get("namespace") or namespace
    merged_all = chart().merge_values(values or {})
    if serving.get("imagePullSecrets") is None:  # null = images.pullSecrets
        serving["imagePullSecrets"] = list(merged_all["images"].get("pullSecrets") or [])
    if not serving["transformer"].get("image"):
        images = merged_all["images"]
        tag = images.get("tag") or chart().metadata["appVersion"]
        ref = f"{images['registry']}/{images['serve']['repository']}:{tag}"
        if images["serve"].get("digest"):
            ref += "@" + images["serve"]["digest"]
        serving["transformer"]["image"] = ref
    return serving


def settings_for(values: dict[str, Any] | None = None, **kw: Any) -> Any:
    from reasoning_ner.k8s.inference_service import ServingSettings

    return ServingSettings.from_helm_values(serving_values(values, **kw))


# ------------------------------------------------------------------------------------ validation


def structural_problems(obj: dict[str, Any]) -> list[str]:
    from .monitoring_schemas import monitoring_problems

    return monitoring_problems(obj)


def validate(objs: list[dict[str, Any]]) -> list[str]:
    """Problems of every object: CRD kinds against ../shared/k8s/crds, core kinds with
    kubernetes-validate (strict), the prometheus-operator kinds against a structural schema."""
    problems: list[str] = []
    for obj in objs:
        problems += _object_problems(json.dumps(obj, sort_keys=True))
    return problems


@functools.lru_cache(maxsize=1024)
def _object_problems(obj_json: str) -> tuple[str, ...]:
    """Problems of one object (cached: many tests validate the same rendered objects)."""
    from reasoning_ner.k8s.schema import object_problems

    obj = json.loads(obj_json)
    if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        return tuple(f"{obj['kind']} {obj['metadata']['name']}: {p}" for p in structural_problems(obj))
    return tuple(object_problems(obj, crd_dir=CRD_DIR, k8s_version=K8S_VERSION))


# ------------------------------------------------------------------------------------ tools


def tool(name: str, env_var: str) -> str | None:
    """``<repo>/.venv-tools/bin/<name>``, else ``$<env_var>``; None when neither exists."""
    candidate = REPO_ROOT / ".venv-tools" / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    env = os.environ.get(env_var)
    if env and Path(env).is_file() and os.access(env, os.X_OK):
        return env
    return None


def kubectl() -> str | None:
    return shutil.which("kubectl")


# ------------------------------------------------------------------------------------ stub servers


class StubServer:
    """A tiny HTTP server on 127.0.0.1 that records requests and answers from a handler function."""

    def __init__(self, handler: Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]):
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                stub.requests.append({"method": self.command, "path": self.path, "headers": headers, "body": body})
                status, payload = handler(self.command, self.path, headers, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
