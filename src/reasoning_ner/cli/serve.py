"""``rner serve``: the KServe model server, also the entry point of the transformer container."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import err_console, fail, get_config

#: KServe starts a transformer container with its own arguments (--model_name, --http_port,
#: --predictor_host and others); serve accepts the unknown ones and says it ignores them.
SERVE_CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def serve_cmd(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(help="Model folder (Hugging Face format) or hub name for the in-process backend.")] = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address (default: serve.host = 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: serve.port = 8080).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Model name on the routes (default: serve.model_name).")] = None,
    backend: Annotated[Optional[str], typer.Option(help="transformers (in process, dynamic batching) or remote (OpenAI-compatible, e.g. vLLM).")] = None,
    remote_url: Annotated[Optional[str], typer.Option(help="Base URL of the remote OpenAI-compatible API, e.g. http://ner-llm-predictor/openai/v1.")] = None,
    max_reasoning_tokens: Annotated[Optional[int], typer.Option(help="Deployment cap on thinking tokens (default: uncapped).")] = None,
    # The arguments KServe gives a transformer container (InferenceService spec.transformer).
    kserve_model_name: Annotated[Optional[str], typer.Option("--model_name", hidden=True)] = None,
    kserve_http_port: Annotated[Optional[int], typer.Option("--http_port", hidden=True)] = None,
    kserve_predictor_host: Annotated[Optional[str], typer.Option("--predictor_host", hidden=True)] = None,
) -> None:
    """Serve a model with KServe: V1/V2 predict, OpenAI-compatible chat, health and /metrics.

    Limits, batching and timeouts come from the config's serve section, RNER_SERVE_<FIELD>
    environment variables, or --set serve.<field>=value. Stop with Ctrl-C (or SIGTERM).
    """
    import os

    from pydantic import ValidationError

    from ..modeling import ModelLoadError
    from ..serving import settings_from_config
    from ..serving.server import serve

    if ctx.args:
        err_console.print(f"ignoring arguments serve does not use: {' '.join(ctx.args)}")
    cfg = get_config(ctx)
    if remote_url is None and kserve_predictor_host and not os.environ.get("RNER_SERVE_REMOTE_URL"):
        remote_url = f"http://{kserve_predictor_host}/openai/v1"  # KServe's Hugging Face runtime
    try:
        settings = settings_from_config(cfg, host=host, port=port or kserve_http_port, model_name=name or kserve_model_name,
                                        backend=backend, remote_url=remote_url, max_reasoning_tokens=max_reasoning_tokens)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise fail(f"invalid serve settings: {problems}") from exc
    if settings.backend == "transformers" and not model:
        raise fail("--model is required with the transformers backend (or use --backend remote --remote-url URL)")
    source = model if settings.backend == "transformers" else settings.remote_url
    err_console.print(f"loading {source} ({settings.backend}), then serving {settings.model_name!r} on "
                      f"http://{settings.host}:{settings.port} - predict: /v1/models/{settings.model_name}:predict, "
                      "OpenAI: /openai/v1 (Ctrl-C to stop)")
    try:
        serve(settings, model)
    except (ModelLoadError, ValueError) as exc:
        raise fail(str(exc)) from exc
