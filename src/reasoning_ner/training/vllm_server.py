"""GRPO rollouts from a vLLM server, as the reference trains: trl's ``trl vllm-serve`` on its own GPU.

In server mode (``grpo.use_vllm`` with ``grpo.vllm_mode: server``) trl's trainer sends every
rollout batch to a ``trl vllm-serve`` process and pushes the new weights to it after each step.
This module builds that process's exact command line from the configuration
(:func:`vllm_serve_command`), starts it on the GPUs the step reserves for it
(``grpo.vllm_server_launch``, :func:`launch_vllm_server`) and, before any training starts, waits
for its ``/health`` (:func:`wait_for_vllm_server`): an unreachable server fails the step at once,
naming the URL, instead of after a timeout per rollout. trl itself is used as it ships.

In a multi-node GRPO TrainJob the server is a role of its own (``reasoning_ner.k8s.trainjob``): the
runtime's server container runs ``python -m reasoning_ner.training.vllm_server`` (:func:`main`), which
execs the command the TrainJob built with :func:`vllm_serve_command` and passed in
:data:`SERVE_COMMAND_ENV`.

vLLM is in neither this machine's environment nor the lent GPU machine's; the command line is
checked against trl's own argument parser and the health check against a stand-in on 127.0.0.1
(tests/test_vllm_server.py). docs/grpo.md says how to run it on a GPU node.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..config import Config, GRPOSection


#: The JSON list the TrainJob's server container execs (a TrainJob can set env there, not a command).
SERVE_COMMAND_ENV = "RNER_VLLM_SERVE_COMMAND"


class VLLMServerError(RuntimeError):
    """The rollout server cannot be reached, or it exited while starting."""


def server_base_url(g: GRPOSection) -> str:
    """Where trl's trainer reaches the server (``vllm_server_base_url``, else host and port)."""
    return (g.vllm_server_base_url or f"http://{g.vllm_server_host}:{g.vllm_server_port}").rstrip("/")


def vllm_serve_command(cfg: Config, model_dir: str) -> list[str]:
    """``trl vllm-serve`` for the policy ``model_dir`` with the profile's rollout settings."""
    g = cfg.grpo
    return [
        "trl", "vllm-serve",
        "--model", str(model_dir),
        "--tensor_parallel_size", str(g.vllm_tensor_parallel_size),
        "--host", g.vllm_server_bind_host,
        "--port", str(g.vllm_server_port),
        "--gpu_memory_utilization", str(g.vllm_server_gpu_memory_utilization),
        "--dtype", "bfloat16" if g.bf16 else "auto",
        # prompt + completion: the KV cache is sized for what a rollout can hold, not the model's context
        "--max_model_len", str(g.max_prompt_length + g.max_completion_length),
        # every completion of a group shares its prompt
        "--enable_prefix_caching", "true",
        "--trust_remote_code", str(cfg.model.trust_remote_code).lower(),
    ]


def launch_vllm_server(cfg: Config, model_dir: str, log_path: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``trl vllm-serve`` on ``grpo.vllm_server_gpus`` (``CUDA_VISIBLE_DEVICES``), logging to ``log_path``."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": cfg.grpo.vllm_server_gpus}
    out: Any = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 (the process keeps it)
    return subprocess.Popen(vllm_serve_command(cfg, model_dir), env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_for_vllm_server(url: str, timeout_s: float, poll_s: float = 2.0,
                         process: subprocess.Popen[bytes] | None = None) -> float:
    """Seconds until ``GET {url}/health`` answers 200; raises :class:`VLLMServerError` naming the URL
    when ``timeout_s`` passes first or the server ``process`` exits."""
    started = time.monotonic()
    last = "no answer"
    while True:
        if process is not None and process.poll() is not None:
            raise VLLMServerError(f"the vLLM rollout server for {url} exited with code {process.returncode} while starting "
                                  "(its log is in the GRPO output folder: vllm-server.log)")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=min(5.0, max(timeout_s, 0.1))) as reply:
                if reply.status == 200:
                    return time.monotonic() - started
                last = f"HTTP {reply.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() - started + poll_s > timeout_s:
            raise VLLMServerError(
                f"no vLLM rollout server at {url} ({last}) after {timeout_s:.0f} s: start `trl vllm-serve` there "
                "(`rner train vllm-serve-command --model DIR` prints the command), set grpo.vllm_server_launch=true to start it in this step, "
                "or grpo.use_vllm=false to generate with transformers")
        time.sleep(poll_s)


@contextmanager
def rollout_server(cfg: Config, model_dir: str, device: str, log_dir: str) -> Iterator[str | None]:
    """The server-mode rollout server for one GRPO run: started here when ``vllm_server_launch`` (by
    the main process only), then waited for by every process; stopped at the end. Yields its URL,
    or None when rollouts do not go through a server (no vLLM, colocate mode, or no GPU, which the
    trainer config refuses with its own message)."""
    g = cfg.grpo
    if not (g.use_vllm and g.vllm_mode == "server" and device == "cuda"):
        yield None
        return
    url = server_base_url(g)
    process = None
    if g.vllm_server_launch and os.environ.get("RANK", "0") == "0":
        process = launch_vllm_server(cfg, model_dir, os.path.join(log_dir, "vllm-server.log"))
    try:
        wait_for_vllm_server(url, g.vllm_server_timeout, process=process)
        yield url
    finally:
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> int:
    """``python -m reasoning_ner.training.vllm_server``: exec the ``trl vllm-serve`` command in
    ``$RNER_VLLM_SERVE_COMMAND`` (a JSON list); anything else is refused before a GPU is touched."""
    raw = os.environ.get(SERVE_COMMAND_ENV, "")
    try:
        command = json.loads(raw)
    except json.JSONDecodeError:
        command = None
    if not (isinstance(command, list) and command[:2] == ["trl", "vllm-serve"]
            and all(isinstance(a, str) for a in command)):
        print(f"error: {SERVE_COMMAND_ENV} must be a JSON list starting with \"trl\", \"vllm-serve\" "
              f"(reasoning_ner.k8s.trainjob puts it there), got {raw[:200]!r}", file=sys.stderr)
        return 2
    print(shlex.join(command), flush=True)
    os.execvp(command[0], command)
    return 0  # reached only where exec is stubbed (tests)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
