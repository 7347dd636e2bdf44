"""Server-mode GRPO rollouts: the exact `trl vllm-serve` command (parsed by trl's own parser), the
early health check against a stand-in on 127.0.0.1, and the step that starts and stops the server."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reasoning_ner.cli import app
from reasoning_ner.config import load_config
from reasoning_ner.training import vllm_server
from reasoning_ner.training.vllm_server import (VLLMServerError, rollout_server, server_base_url, vllm_serve_command,
                                                wait_for_vllm_server)


class _Health(http.server.BaseHTTPRequestHandler):
    ready_after = 0.0
    started = 0.0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        ok = self.path == "/health" and time.monotonic() - self.started >= self.ready_after
        self.send_response(200 if ok else 503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def stand_in() -> Iterator[tuple[str, type[_Health]]]:
    """A trl vllm-serve stand-in: /health answers 503 while 'loading', then 200."""
    handler = type("Health", (_Health,), {"started": time.monotonic()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def parse_with_trl(cmd: list[str]) -> Any:
    """trl's own `trl vllm-serve` argument parser on ``cmd`` (also used by tests/test_trainjob_grpo.py)."""
    from trl.scripts.vllm_serve import make_parser

    assert cmd[:2] == ["trl", "vllm-serve"]
    (args,) = make_parser().parse_args_into_dataclasses(cmd[2:])
    return args


def test_the_command_is_what_trls_vllm_serve_parses() -> None:
    cfg = load_config(profile="qwen3-8b", overrides=["grpo.vllm_tensor_parallel_size=2"])
    cmd = vllm_serve_command(cfg, "/workspace/sft/model")
    args = parse_with_trl(cmd)
    g = cfg.grpo
    assert (args.model, args.tensor_parallel_size, args.port, args.host) == ("/workspace/sft/model", 2, 8000, "127.0.0.1")
    assert args.max_model_len == g.max_prompt_length + g.max_completion_length
    assert args.gpu_memory_utilization == g.vllm_server_gpu_memory_utilization and args.dtype == "bfloat16"
    assert args.enable_prefix_caching is True and args.trust_remote_code is False


def test_the_paper_profiles_roll_out_with_a_server_on_its_own_gpu() -> None:
    for profile in ("qwen3-1.7b", "qwen3-8b"):
        g = load_config(profile=profile).grpo
        assert (g.use_vllm, g.vllm_mode, g.vllm_server_launch, g.vllm_server_gpus) == (True, "server", True, "1")
    assert not load_config(profile="tiny-cpu").grpo.use_vllm
    assert server_base_url(load_config(overrides=["grpo.vllm_server_base_url=http://vllm:8000/"]).grpo) == "http://vllm:8000"


def test_the_health_check_waits_for_a_loading_server(stand_in) -> None:
    url, handler = stand_in
    handler.ready_after = 0.6
    assert 0.5 <= wait_for_vllm_server(url, timeout_s=10, poll_s=0.1) < 5


def test_an_unreachable_server_fails_at_once_naming_its_url() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(VLLMServerError, match=f"no vLLM rollout server at {url}"):
        wait_for_vllm_server(url, timeout_s=1.0, poll_s=0.2)
    assert time.monotonic() - started < 5


def test_the_step_starts_the_server_waits_and_stops_it(stand_in, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rollout_server with vllm_server_launch: a real child process in the server's place (vLLM cannot run
    here), its environment pinned to the server's GPU; a server that dies while starting fails the step."""
    url, _ = stand_in
    cfg = load_config(profile="qwen3-8b", overrides=[f"grpo.vllm_server_base_url={url}", "grpo.vllm_server_timeout=10"])
    seen: dict = {}

    def fake_command(cfg, model_dir):
        seen["cmd"] = real(cfg, model_dir)
        return [sys.executable, "-c", "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(60)"]

    real = vllm_server.vllm_serve_command
    monkeypatch.setattr(vllm_server, "vllm_serve_command", fake_command)
    log = tmp_path / "vllm-server.log"
    with rollout_server(cfg, "/models/sft", "cuda", str(tmp_path)) as reached:
        assert reached == url
        deadline = time.monotonic() + 10
        while not log.read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert seen["cmd"][:4] == ["trl", "vllm-serve", "--model", "/models/sft"]
    assert log.read_text().strip() == "1"  # CUDA_VISIBLE_DEVICES of the server

    monkeypatch.setattr(vllm_server, "vllm_serve_command", lambda cfg, m: [sys.executable, "-c", "raise SystemExit(3)"])
    dead = load_config(profile="qwen3-8b", overrides=["grpo.vllm_server_port=1", "grpo.vllm_server_timeout=20"])
    with pytest.raises(VLLMServerError, match="exited with code 3"):
        with rollout_server(dead, "/models/sft", "cuda", str(tmp_path)):
            pass
    with rollout_server(dead, "/models/sft", "cpu", str(tmp_path)) as none:  # the trainer config refuses vLLM on CPU
        assert none is None


def test_the_cli_prints_the_command() -> None:
    res = CliRunner().invoke(app, ["--profile", "qwen3-8b", "train", "vllm-serve-command", "--model", "/m"])
    assert res.exit_code == 0, res.output
    assert "trl vllm-serve --model /m" in res.output and "http://127.0.0.1:8000" in res.output


def test_the_trainjob_server_role_execs_the_command_from_its_env(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """`python -m reasoning_ner.training.vllm_server` (the runtime's fixed server command) execs exactly
    the JSON list the TrainJob passes, and refuses anything that is not a `trl vllm-serve` command."""
    cmd = vllm_serve_command(load_config(profile="qwen3-8b"), "/shared/sft/model")
    execs: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(vllm_server.os, "execvp", lambda file, args: execs.append((file, args)))
    monkeypatch.setenv(vllm_server.SERVE_COMMAND_ENV, json.dumps(cmd))
    assert vllm_server.main() == 0
    assert execs == [("trl", cmd)]
    for bad in ("", "not json", json.dumps(["sh", "-c", "rm -rf /"]), json.dumps(["trl", "vllm-serve", 1])):
        monkeypatch.setenv(vllm_server.SERVE_COMMAND_ENV, bad)
        assert vllm_server.main() == 2
        assert vllm_server.SERVE_COMMAND_ENV in capsys.readouterr().err
    assert len(execs) == 1
