"""The served model is the promoted one (issue 13), against real protocol peers on 127.0.0.1.

The path a model takes on a cluster, step by step, with the session's model trained for real
(``sft_model``: the tiny-cpu recipe of bench/sft_learning.py, seed 0):

1. ``rner eval run`` scores it on a few CoNLL-2003 sentences (a real report) and ``rner promote``
   gates it and copies it into a registry on the S3 server (moto, IAM-checked keys,
   tests/s3.py): ``s3://<bucket>/registry/models/<version>/``.
2. The chart is rendered (Helm SDK) with ``serving.storage`` pointed at that copy and at the S3
   server, the S3 Secret created by the chart from ``secrets.s3``.
3. The storage initializer's environment is derived from the RENDERED Secret and ServiceAccount
   with KServe's credential rules (:mod:`reasoning_ner.k8s.kserve_credentials`), and the
   InferenceService's ``storageUri`` is downloaded with KServe's own storage code
   (``kserve_storage.Storage.download``, what the storage-initializer runs) in a process whose
   environment is exactly that (plus PATH and an empty HOME): nothing of this process leaks in.
4. A stand-in for KServe's Hugging Face runtime serves the download (``rner serve --backend
   transformers``, the same ``/openai/v1`` API; the runtime itself is not installable here), and
   the transformer runs the rendered container's exact ``command``, ``args`` and ``env``, changed
   only where it must be to run here: bind host, port and the predictor's address.
5. Through the transformer, a V1 predict and an ``openai`` chat return grounded entities on
   held-out sentences where the model found a correct entity offline, and exactly the entities
   its offline greedy generation gave: the served model is the promoted one. (The V1 route asks the
   predictor for the answer schema, ``response_format``; on an answer already valid under it the
   grammar must change nothing, which this test also checks.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import psutil
import pytest

from reasoning_ner.flywheel.baseline import BASELINE_FILE
from typer.testing import CliRunner

from reasoning_ner.cli import app
from reasoning_ner.config import load_config
from reasoning_ner.grounding import ground
from reasoning_ner.k8s.kserve_credentials import credential_env, storage_initializer_env
from reasoning_ner.parsing import parse_answer
from reasoning_ner.prompt import messages, render_prompt
from tests.helm.chart_tools import chart_defaults, one, render
from tests.s3 import REGION, S3Server, s3_env

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
#: What the processes started here find on PATH: the venv (the image's `rner`) and the system.
PATH = os.pathsep.join([str(VENV_BIN), "/usr/local/bin", "/usr/bin", "/bin"])
#: Held-out sentences sent through the service, and CoNLL sentences the promotion report scores.
SENTENCES = 3
EVAL_LIMIT = 8
READY_TIMEOUT_S = 120.0
#: The only parts of the transformer container that may differ here from the rendered one.
LOCAL_ARGS = ("--http_port=", "--predictor_host=")
LOCAL_ENV = ("RNER_SERVE_HOST", "RNER_SERVE_PORT", "RNER_SERVE_REMOTE_URL")


# ------------------------------------------------------------------------------------ sentences


@dataclass(frozen=True)
class Found:
    """A held-out sentence and what the trained model answered for it offline (greedy)."""

    text: str
    labels: list[str]
    gold: frozenset[tuple[str, str]]  # (span, label)
    answer: dict[str, list[str]]  # the parsed JSON answer: label -> spans
    entities: list[tuple[int, int, str, str]]  # grounded: (start, end, label, text), sorted
    ungrounded: list[tuple[str, str]]


def _entity_rows(entities: Any) -> list[tuple[int, int, str, str]]:
    """(start, end, label, text) rows of grounding results or of V1 JSON entities, sorted."""
    rows = [(e["start"], e["end"], e["label"], e["text"]) if isinstance(e, dict) else (e.start, e.end, e.label, e.text)
            for e in entities]
    return sorted(rows)


def found_sentences(sft_model: dict[str, Any], n: int = SENTENCES) -> list[Found]:
    """The first ``n`` held-out sentences whose offline greedy answer parsed, kept to the offered
    labels, and named at least one gold entity that grounds in the sentence.

    The bench decoded the held-out sentences in padded batches; the server decodes one sentence at a
    time. Where the trained model has a near tie, padding moves the logits enough to flip a greedy
    choice (a CI run saw `Davor Suker` as location offline and organization served), so each
    candidate is decoded again alone, as the server decodes it, and that answer is the expectation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasoning_ner.training.generate import generate, record_prompts

    model = AutoModelForCausalLM.from_pretrained(sft_model["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(sft_model["model_dir"])
    prompt_cfg = sft_model["cfg"].prompt
    picked: list[Found] = []
    for rec, batched in zip(sft_model["eval_records"], sft_model["generations"], strict=True):
        if not parse_answer(batched, rec.schema).schema_valid():
            continue
        generation = generate(model, tokenizer, record_prompts([rec], prompt_cfg), batch_size=1)[0]
        parsed = parse_answer(generation, rec.schema)
        if not parsed.schema_valid():
            continue
        gold = frozenset((e.text, e.label) for e in rec.entities)
        grounded = ground(rec.text, parsed.entities)
        if not any((e.text, e.label) in gold for e in grounded.entities):
            continue
        picked.append(Found(rec.text, list(rec.schema), gold, parsed.entities, _entity_rows(grounded.entities),
                            sorted(grounded.ungrounded)))
        if len(picked) == n:
            break
    return picked


@pytest.fixture(scope="module")
def found(sft_model: dict[str, Any]) -> list[Found]:
    picked = found_sentences(sft_model)
    assert len(picked) == SENTENCES, (
        f"the trained model found a correct entity in only {len(picked)} of {len(sft_model['eval_records'])} "
        f"held-out sentences (trained: {sft_model['trained']})")
    return picked


# ------------------------------------------------------------------------------------ promotion


@pytest.fixture(scope="module")
def champion(sft_model: dict[str, Any], s3_server: S3Server, prepared_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``rner eval run`` then ``rner promote`` into an S3 registry; the registry copy's URI and record."""
    work = tmp_path_factory.mktemp("served-promote")
    bucket = s3_server.bucket("served")
    registry = f"s3://{bucket}/registry"
    model_dir = str(sft_model["model_dir"])
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp, s3_env(s3_server, mp):  # the pipeline step's S3 Secret variables
        evaluated = runner.invoke(app, ["--profile", "tiny-cpu", "eval", "run", "--model", model_dir, "--suite", "supervised",
                                        "--limit", str(EVAL_LIMIT), "--data-dir", str(prepared_dir), "--out", str(work / "eval")])
        assert evaluated.exit_code == 0, evaluated.output
        report = work / "eval" / "report.json"
        promoted = runner.invoke(app, ["--profile", "tiny-cpu", "--set", f"promotion.registry_uri={registry}", "promote",
                                       "--report", str(report), "--model", model_dir])
    assert promoted.exit_code == 0, promoted.output
    match = re.search(r"serving copy: (s3://\S+)", promoted.output)
    assert match, promoted.output
    pointer = json.loads(s3_server.client().get_object(Bucket=bucket, Key="registry/champion.json")["Body"].read())
    return {"uri": match.group(1), "bucket": bucket, "registry": registry, "champion": pointer,
            "report": json.loads(report.read_text()), "model_dir": Path(model_dir)}


def test_promote_copies_the_trained_model_into_the_s3_registry(champion: dict[str, Any], s3_server: S3Server) -> None:
    version = champion["champion"]["version"]
    assert champion["uri"] == f"{champion['registry']}/models/{version}" == champion["champion"]["model_uri"]
    report = champion["report"]
    assert report["settings"]["limit"] == EVAL_LIMIT and list(report["suites"]["supervised"]["datasets"]) == ["conll2003"]
    assert report["suites"]["supervised"]["sentences"] == EVAL_LIMIT
    local = sorted(p.relative_to(champion["model_dir"]).as_posix() for p in champion["model_dir"].rglob("*") if p.is_file())
    expected = sorted([*local, BASELINE_FILE])  # promotion adds the drift baseline beside the model
    assert s3_server.keys(champion["bucket"], f"registry/models/{version}/") == [f"registry/models/{version}/{k}" for k in expected]


# ------------------------------------------------------------------------------------ the chart


@dataclass
class Rendered:
    isvc: dict[str, Any]
    service_account: dict[str, Any]
    secrets: dict[str, dict[str, Any]]  # the serving namespace's Secrets by name
    storage_env: dict[str, str]  # the storage initializer's S3 environment (KServe's rules)


def chart_values(storage_uri: str, s3: S3Server) -> dict[str, Any]:
    """Serving on the registry copy and the S3 server, the S3 Secret created by the chart."""
    return {
        "serving": {"storage": {"storageUri": storage_uri, "s3Endpoint": s3.host_port, "s3UseHttps": False,
                                "s3VerifySsl": False, "s3Region": REGION}},
        "secrets": {"s3": {"create": True, "accessKeyId": s3.access_key_id, "secretAccessKey": s3.secret_access_key}},
    }


@pytest.fixture(scope="module")
def rendered(champion: dict[str, Any], s3_server: S3Server) -> Rendered:
    objs = render(chart_values(champion["uri"], s3_server))
    isvc = one(objs, "InferenceService")
    namespace = isvc["metadata"]["namespace"]
    sa = one(objs, "ServiceAccount", isvc["spec"]["predictor"]["serviceAccountName"])
    assert sa["metadata"]["namespace"] == namespace
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret" and o["metadata"]["namespace"] == namespace}
    env = storage_initializer_env(sa, secrets, isvc_annotations=isvc["metadata"].get("annotations") or {})
    return Rendered(isvc, sa, secrets, env)


def test_the_storage_initializer_gets_the_s3_server_from_the_rendered_secret(rendered: Rendered, champion: dict[str, Any],
                                                                            s3_server: S3Server) -> None:
    assert rendered.isvc["spec"]["predictor"]["model"]["storageUri"] == champion["uri"]
    assert rendered.storage_env == {
        "AWS_ACCESS_KEY_ID": s3_server.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_access_key,
        "S3_USE_HTTPS": "0",
        "S3_ENDPOINT": s3_server.host_port,
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "S3_VERIFY_SSL": "0",
        "AWS_DEFAULT_REGION": REGION,
    }
    # The keys reach the pod as secretKeyRef to the chart's Secret (never as literal values).
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in
            credential_env(rendered.service_account, rendered.secrets, isvc_annotations=rendered.isvc["metadata"]["annotations"])
            if "valueFrom" in e}
    name = chart_defaults()["secrets"]["s3"]["name"]
    assert refs == {"AWS_ACCESS_KEY_ID": name, "AWS_SECRET_ACCESS_KEY": name}


# ------------------------------------------------------------------------------------ storage initializer

DOWNLOAD = "import sys\nfrom kserve_storage import Storage\nprint(Storage.download(sys.argv[1], sys.argv[2]))\n"


@pytest.fixture(scope="module")
def downloaded(rendered: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``Storage.download(storageUri, /mnt/models)`` with exactly the storage initializer's environment."""
    work = tmp_path_factory.mktemp("storage-initializer")
    (work / "home").mkdir()  # no ~/.aws of this machine
    out = work / "mnt" / "models"
    env = {**rendered.storage_env, "PATH": PATH, "HOME": str(work / "home")}
    proc = subprocess.run([sys.executable, "-c", DOWNLOAD, rendered.isvc["spec"]["predictor"]["model"]["storageUri"], str(out)],
                          env=env, cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_kserve_storage_downloads_exactly_the_promoted_model(downloaded: Path, champion: dict[str, Any]) -> None:
    got, trained = _tree(downloaded), _tree(champion["model_dir"])
    assert "config.json" in got and any(name.endswith(".safetensors") for name in got)
    # Promotion adds the evaluation's drift baseline beside the model's own files (the server reads it).
    assert isinstance(json.loads(got.pop(BASELINE_FILE)), dict)
    assert got.keys() == trained.keys()
    assert [name for name in got if got[name] != trained[name]] == []


# ------------------------------------------------------------------------------------ serving


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pod_env(container: dict[str, Any], annotations: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet gives it: plain values, and the Downward API's annotation
    references resolved against the pod's annotations (KServe copies the InferenceService's to the pod;
    a missing one is the empty string)."""
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            assert path.startswith("metadata.annotations['"), e  # the only reference the builder writes
            env[e["name"]] = annotations.get(path[len("metadata.annotations['"):-2], "")
    return env


def localize(container: dict[str, Any], port: int, predictor: str, annotations: dict[str, str]) -> dict[str, Any]:
    """The container's command, args and env (a dict) as run here: loopback, ``port``, ``predictor``."""
    args = []
    for arg in container["args"]:
        if arg.startswith("--http_port="):
            arg = f"--http_port={port}"
        elif arg.startswith("--predictor_host="):
            arg = f"--predictor_host={predictor}"
        args.append(arg)
    env = pod_env(container, annotations)
    env.update(RNER_SERVE_HOST="127.0.0.1", RNER_SERVE_PORT=str(port), RNER_SERVE_REMOTE_URL=f"http://{predictor}/openai/v1")
    return {"command": list(container["command"]), "args": args, "env": env}


def _start(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, request: pytest.FixtureRequest) -> subprocess.Popen:
    handle = open(log, "wb")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: only what this test started
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        handle.close()

    request.addfinalizer(stop)
    return proc


def _wait_ready(procs: dict[str, tuple[subprocess.Popen, str, Path]], timeout: float = READY_TIMEOUT_S) -> None:
    """Poll each server's /v2/health/ready until 200; fail with its log when it exits or times out."""
    deadline = time.monotonic() + timeout
    waiting = dict(procs)
    while waiting:
        for what, (proc, base, log) in list(waiting.items()):
            if proc.poll() is not None:
                pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    del waiting[what]
            except httpx.HTTPError:
                pass
        if waiting and time.monotonic() > deadline:
            logs = "\n".join(f"--- {w}:\n{log.read_text(errors='replace')[-2000:]}" for w, (_, _, log) in waiting.items())
            pytest.fail(f"not ready within {timeout:.0f} s: {sorted(waiting)}\n{logs}")
        if waiting:
            time.sleep(0.25)


@dataclass
class Served:
    name: str  # the InferenceService's name: the model name on both servers
    base: str  # the transformer's URL
    predictor_base: str
    container: dict[str, Any]  # the rendered transformer container
    run: dict[str, Any]  # command, args, env as run here
    transformer_pid: int
    profile: str


@pytest.fixture(scope="module")
def served(rendered: Rendered, downloaded: Path, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[Served]:
    """The predictor stand-in on the download and the transformer as rendered, both on loopback."""
    work = tmp_path_factory.mktemp("served")
    isvc = rendered.isvc
    name = isvc["metadata"]["name"]
    predictor_port, port = free_ports(2)
    predictor = f"127.0.0.1:{predictor_port}"

    # KServe's Hugging Face runtime serves storageUri (/mnt/models) as --model_name=<isvc name>,
    # with the --dtype of the rendered predictor.
    runtime_args = dict(a.split("=", 1) for a in isvc["spec"]["predictor"]["model"]["args"] if "=" in a)
    stand_in_env = {k: v for k, v in os.environ.items() if not k.startswith(("RNER_", "AWS_", "S3_"))}
    stand_in_env.update(PATH=PATH, RNER_SERVE_DTYPE=runtime_args["--dtype"], RNER_SERVE_ACCESS_LOG="false")
    stand_in = _start([str(VENV_BIN / "rner"), "serve", "--backend", "transformers", "--model", str(downloaded),
                       "--host", "127.0.0.1", "--port", str(predictor_port), "--name", name],
                      stand_in_env, work, work / "predictor.log", request)

    container = isvc["spec"]["transformer"]["containers"][0]
    run = localize(container, port, predictor, isvc["metadata"].get("annotations") or {})
    executable = shutil.which(run["command"][0], path=PATH)
    assert executable == str(VENV_BIN / "rner")
    transformer = _start([executable, *run["command"][1:], *run["args"]], {**run["env"], "PATH": PATH}, work,
                         work / "transformer.log", request)
    base = f"http://127.0.0.1:{port}"
    _wait_ready({"predictor stand-in": (stand_in, f"http://{predictor}", work / "predictor.log"),
                 "transformer": (transformer, base, work / "transformer.log")})
    profile = container["args"][container["args"].index("--profile") + 1]
    yield Served(name, base, f"http://{predictor}", container, run, transformer.pid, profile)


def test_the_transformer_runs_the_rendered_container_changed_only_to_run_here(served: Served) -> None:
    rendered, run = served.container, served.run
    port = served.base.rsplit(":", 1)[1]
    predictor = served.predictor_base.removeprefix("http://")
    assert run["command"] == rendered["command"]
    assert len(run["args"]) == len(rendered["args"])
    changed_args = {a: b for a, b in zip(rendered["args"], run["args"]) if a != b}
    assert {a.split("=", 1)[0] + "=": b for a, b in changed_args.items()} == {
        "--http_port=": f"--http_port={port}", "--predictor_host=": f"--predictor_host={predictor}"}
    env = pod_env(rendered, {})
    refs = {e["name"] for e in rendered["env"] if "valueFrom" in e}  # resolved from the pod's annotations (localize)
    assert run["env"].keys() == env.keys()
    assert {k: (env[k], v) for k, v in run["env"].items() if env[k] != v and k not in refs} == {
        "RNER_SERVE_HOST": ("0.0.0.0", "127.0.0.1"),
        "RNER_SERVE_PORT": (env["RNER_SERVE_PORT"], port),
        "RNER_SERVE_REMOTE_URL": (env["RNER_SERVE_REMOTE_URL"], f"http://{predictor}/openai/v1"),
    }
    # ... and that is what the running process got: its arguments and its whole environment.
    proc = psutil.Process(served.transformer_pid)
    assert proc.cmdline()[-len(run["args"]):] == run["args"]
    assert proc.environ() == {**run["env"], "PATH": PATH}
    connections = getattr(proc, "net_connections", proc.connections)  # psutil >= 6 / 5.x
    listening = [c.laddr for c in connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", int(port))]


def _openai_calls(base: str) -> float:
    """rner_predict_calls_total{protocol="openai"} of a server (the stand-in counts what reached it)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    match = re.search(r'^rner_predict_calls_total\{protocol="openai"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_v1_predict_returns_the_promoted_models_grounded_entities(served: Served, found: list[Found]) -> None:
    before = _openai_calls(served.predictor_base)
    body = {"instances": [{"text": f.text, "labels": f.labels} for f in found]}
    r = httpx.post(f"{served.base}/v1/models/{served.name}:predict", json=body, timeout=120)
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == len(found)
    for f, p in zip(found, predictions):
        assert p["parse_error"] is None, (f.text, p)
        assert all(f.text[e["start"]:e["end"]] == e["text"] for e in p["entities"]), p  # grounded: verifiable offsets
        assert any((e["text"], e["label"]) in f.gold for e in p["entities"]), (f.text, p["entities"], sorted(f.gold))
        assert _entity_rows(p["entities"]) == f.entities, f.text  # the offline greedy output of the trained model
        assert sorted((u["text"], u["label"]) for u in p["ungrounded"]) == f.ungrounded
    assert _openai_calls(served.predictor_base) - before == len(found)  # each sentence went through the predictor


def test_openai_chat_through_the_transformer_returns_grounded_entities(served: Served, found: list[Found]) -> None:
    cfg = load_config(profile=served.profile)  # the prompt layout of the chart's `rner --profile`
    client = openai.OpenAI(base_url=f"{served.base}/openai/v1", api_key="unused", max_retries=0, timeout=120)
    before = _openai_calls(served.predictor_base)
    for f in found:
        out = client.chat.completions.create(model=served.name, temperature=0, max_tokens=cfg.eval.max_new_tokens,
                                             messages=messages(render_prompt(f.text, f.labels, cfg.prompt.style)))
        assert out.model == served.name and out.choices[0].finish_reason == "stop"
        content = out.choices[0].message.content or ""
        parsed = parse_answer(content, f.labels)
        assert parsed.ok and not parsed.out_of_schema, content
        assert parsed.entities == f.answer, content
        grounded = ground(f.text, parsed.entities)
        assert any((e.text, e.label) in f.gold for e in grounded.entities), (f.text, content)
        assert all(f.text[e.start:e.end] == e.text for e in grounded.entities)
        assert _entity_rows(grounded.entities) == f.entities
    assert _openai_calls(served.predictor_base) - before == len(found)
