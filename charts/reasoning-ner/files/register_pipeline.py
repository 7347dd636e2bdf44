"""Register the compiled pipeline as a pipeline version with the Kubeflow Pipelines v2beta1 REST API.

Run by the chart's post-install/post-upgrade Job (standard library only). PIPELINE_FILE is the
chart's pipeline ConfigMap: the compiled pipeline with its image references already rewritten to
images.tag / digests, and PIPELINE_VERSION is named after that content
(<appVersion>-<12 hex of its sha256>, the chart's rner.pipelineVersion), so a changed pipeline or a
new image build is a new version and an unchanged one is left alone. Steps:

1. wait until the API answers (GET /apis/v2beta1/healthz), retrying connection errors and 5xx
   for WAIT_SECONDS;
2. find the pipeline by name (GET /apis/v2beta1/pipelines/names/{name}?namespace=...); create it
   when it does not exist (POST /apis/v2beta1/pipelines, no version: an upload would add a first
   version named after the pipeline with the same content);
3. list its versions (GET /apis/v2beta1/pipelines/{id}/versions, paged): a version named
   PIPELINE_VERSION already there means nothing to do (idempotent upgrades and re-runs);
4. otherwise upload the version (POST /apis/v2beta1/pipelines/upload_version?pipelineid=...).

The refresh pipeline (REFRESH_PIPELINE_FILE / _NAME / _VERSION, chart value refresh.enabled) is
registered the same way, and REFRESH_SCHEDULE (refresh.schedule, cron) keeps exactly one recurring run
of its current version in experiment REFRESH_EXPERIMENT:

5. find or create the experiment (GET /apis/v2beta1/experiments?filter=..., POST /apis/v2beta1/experiments);
6. list its recurring runs (GET /apis/v2beta1/recurringruns?experiment_id=...): the chart's own (display
   name starting with REFRESH_PIPELINE_NAME) of this version and cron are left alone; others are deleted
   (DELETE /apis/v2beta1/recurringruns/{id}: KFP cannot repoint one) and a new one is created
   (POST /apis/v2beta1/recurringruns, cron_schedule, no_catchup, REFRESH_PARAMETERS as the run's
   parameters, the runner ServiceAccount). An empty REFRESH_SCHEDULE deletes the chart's recurring runs.

Authentication: the projected ServiceAccount token at KFP_TOKEN_PATH (audience
pipelines.kubeflow.org) as a Bearer token; multi-user Kubeflow authorizes it in KFP_NAMESPACE,
standalone KFP ignores it. Prints one JSON line with the outcome; exits 1 on failure.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

API = "/apis/v2beta1"


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Client:
    def __init__(self, host: str, token: str | None, wait_seconds: float, timeout: float = 30.0,
                 first_delay: float = 2.0):
        self.host = host.rstrip("/")
        self.token = token
        self.wait_seconds = wait_seconds
        self.timeout = timeout
        self.first_delay = first_delay

    def request(self, method: str, path: str, query: dict[str, str] | None = None, body: bytes | None = None,
                content_type: str | None = None, ok404: bool = False) -> dict | None:
        url = self.host + path
        query = {k: v for k, v in (query or {}).items() if v not in (None, "")}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        deadline = time.monotonic() + self.wait_seconds
        delay = self.first_delay
        while True:
            req = urllib.request.Request(url, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = resp.read()
                    return json.loads(data) if data else {}
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:2000]
                if exc.code == 404 and ok404:
                    return None
                if exc.code < 500 or time.monotonic() >= deadline:
                    raise ApiError(exc.code, f"{method} {path} -> HTTP {exc.code}: {detail}") from None
                log(f"{method} {path} -> HTTP {exc.code}, retrying in {delay:.0f}s")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise ApiError(0, f"{method} {url} failed: {exc}") from None
                log(f"{method} {path} failed ({exc}), retrying in {delay:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 15.0)

    def upload(self, path: str, query: dict[str, str], filename: str, content: bytes) -> dict:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; filename=\"{filename}\"\r\n"
                "Content-Type: application/x-yaml\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", path, query, body, f"multipart/form-data; boundary={boundary}") or {}


def read_token(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def find_version(client: Client, pipeline_id: str, version: str) -> dict | None:
    token = ""
    while True:
        page = client.request("GET", f"{API}/pipelines/{pipeline_id}/versions",
                              {"page_size": "100", "page_token": token}) or {}
        for v in page.get("pipeline_versions") or []:
            if version in (v.get("name"), v.get("display_name")):
                return v
        token = page.get("next_page_token") or ""
        if not token:
            return None


def register(env: dict[str, str]) -> dict:
    host = env.get("KFP_HOST", "http://ml-pipeline.kubeflow.svc.cluster.local:8888")
    client = Client(host, read_token(env.get("KFP_TOKEN_PATH", "")), float(env.get("WAIT_SECONDS", "300")),
                    first_delay=float(env.get("RETRY_DELAY_SECONDS", "2")))
    client.request("GET", f"{API}/healthz")
    namespace = env.get("KFP_NAMESPACE", "")
    result = register_version(client, env["PIPELINE_NAME"], env["PIPELINE_VERSION"], namespace,
                              env.get("PIPELINE_DESCRIPTION", ""), env.get("PIPELINE_FILE", "/pipeline/pipeline.yaml"))
    if env.get("REFRESH_PIPELINE_FILE"):
        refresh = register_version(client, env["REFRESH_PIPELINE_NAME"], env["REFRESH_PIPELINE_VERSION"], namespace,
                                   env.get("REFRESH_PIPELINE_DESCRIPTION", ""), env["REFRESH_PIPELINE_FILE"])
        refresh["recurring_run"] = schedule_refresh(client, env, refresh, namespace)
        result["refresh"] = refresh
    return result


def normalize_cron(expr: str) -> str:
    """KFP schedules with 6-field cron (seconds first); a 5-field expression gets 0 seconds (as `rner pipeline submit`)."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(f"refresh.schedule {expr!r} must have 5 fields (min hour dom month dow) or 6 (seconds first)")
    return " ".join(fields)


def _experiment(client: Client, name: str, namespace: str) -> str:
    flt = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})
    found = (client.request("GET", f"{API}/experiments", {"filter": flt, "namespace": namespace, "page_size": "1"})
             or {}).get("experiments") or []
    if found:
        return found[0]["experiment_id"]
    body = {"display_name": name, **({"namespace": namespace} if namespace else {})}
    return (client.request("POST", f"{API}/experiments", body=json.dumps(body).encode(),
                           content_type="application/json") or {})["experiment_id"]


def schedule_refresh(client: Client, env: dict[str, str], refresh: dict, namespace: str) -> dict:
    """Keep one recurring run of the refresh pipeline's registered version on REFRESH_SCHEDULE (none when empty)."""
    cron = normalize_cron(env["REFRESH_SCHEDULE"]) if env.get("REFRESH_SCHEDULE", "").strip() else ""
    prefix = env["REFRESH_PIPELINE_NAME"]
    experiment_id = _experiment(client, env.get("REFRESH_EXPERIMENT") or prefix, namespace)
    runs = (client.request("GET", f"{API}/recurringruns", {"experiment_id": experiment_id, "namespace": namespace,
                                                           "page_size": "100"}) or {}).get("recurringRuns") or []
    ours = [r for r in runs if str(r.get("display_name", "")).startswith(prefix)]
    version_id = refresh["pipeline_version_id"]
    keep = [r for r in ours if cron and (r.get("trigger") or {}).get("cron_schedule", {}).get("cron") == cron
            and (r.get("pipeline_version_reference") or {}).get("pipeline_version_id") == version_id]
    for stale in [r for r in ours if r not in keep[:1]]:
        client.request("DELETE", f"{API}/recurringruns/{stale['recurring_run_id']}")
    if not cron:
        return {"status": "none", "deleted": len(ours)}
    if keep:
        return {"status": "exists", "recurring_run_id": keep[0]["recurring_run_id"], "cron": cron}
    body = {"display_name": f"{prefix} {refresh['version']}", "description": env.get("REFRESH_PIPELINE_DESCRIPTION", ""),
            "pipeline_version_reference": {"pipeline_id": refresh["pipeline_id"], "pipeline_version_id": version_id},
            "runtime_config": {"parameters": json.loads(env.get("REFRESH_PARAMETERS") or "{}")},
            "service_account": env.get("REFRESH_SERVICE_ACCOUNT", ""), "experiment_id": experiment_id,
            "max_concurrency": env.get("REFRESH_MAX_CONCURRENCY", "1"), "no_catchup": True, "mode": "ENABLE",
            "trigger": {"cron_schedule": {"cron": cron}}}
    created = client.request("POST", f"{API}/recurringruns", body=json.dumps(body).encode(),
                             content_type="application/json") or {}
    return {"status": "scheduled", "recurring_run_id": created.get("recurring_run_id"), "cron": cron,
            "replaced": len(ours)}


def register_version(client: Client, name: str, version: str, namespace: str, description: str, path: str) -> dict:
    """Create the pipeline ``name`` when absent and upload ``path`` as ``version`` unless it is there already."""
    with open(path, "rb") as fh:
        content = fh.read()
    pipeline = client.request("GET", f"{API}/pipelines/names/{urllib.parse.quote(name, safe='')}",
                              {"namespace": namespace}, ok404=True)
    created = False
    if not pipeline:
        log(f"pipeline {name!r} not found; creating it")
        body = {"name": name, "display_name": name, "description": description}
        if namespace:
            body["namespace"] = namespace
        pipeline = client.request("POST", f"{API}/pipelines", body=json.dumps(body).encode(),
                                  content_type="application/json") or {}
        created = True
    pipeline_id = pipeline.get("pipeline_id")
    if not pipeline_id:
        raise ApiError(0, f"the KFP API returned no pipeline_id for {name!r}: {pipeline}")

    existing = find_version(client, pipeline_id, version)
    if existing:
        return {"status": "exists", "pipeline": name, "pipeline_id": pipeline_id, "version": version,
                "pipeline_version_id": existing.get("pipeline_version_id"), "created_pipeline": created}
    uploaded = client.upload(f"{API}/pipelines/upload_version",
                             {"name": version, "display_name": version, "pipelineid": pipeline_id,
                              "description": description}, f"{name}-{version}.yaml", content)
    return {"status": "registered", "pipeline": name, "pipeline_id": pipeline_id, "version": version,
            "pipeline_version_id": uploaded.get("pipeline_version_id"), "created_pipeline": created}


def quit_istio_sidecar(env: dict[str, str]) -> None:
    """Let a Job finish inside an Istio mesh (the sidecar would otherwise keep the pod running)."""
    if env.get("QUIT_ISTIO_SIDECAR", "0") != "1":
        return
    try:
        urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:15020/quitquitquit", method="POST"), timeout=2)
    except Exception:  # no sidecar: nothing to stop
        pass


def main() -> int:
    env = dict(os.environ)
    try:
        result = register(env)
        print(json.dumps(result), flush=True)
        return 0
    except (ApiError, OSError, KeyError, ValueError) as exc:
        print(json.dumps({"status": "failed", "error": str(exc)}), flush=True)
        return 1
    finally:
        quit_istio_sidecar(env)


if __name__ == "__main__":
    sys.exit(main())
