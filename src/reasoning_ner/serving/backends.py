"""The service's generation backends, their errors and metrics: one import point for the serving layer.

* :class:`TransformersBackend` (:mod:`.transformers_backend`): the model in this process (CPU by
  default), with dynamic batching.
* :class:`RemoteBackend` (:mod:`.remote_backend`): an OpenAI-compatible server (vLLM inside KServe's
  Hugging Face runtime on GPU clusters) over aiohttp.

Both implement :class:`Backend` (:mod:`.backend_interface`); the errors live in :mod:`.errors` and
the Prometheus metrics in :mod:`.prometheus`. Every name stays importable from here, where the rest of
the service imports them; :func:`make_backend` picks the backend a deployment asks for.
"""

from __future__ import annotations

import os
from typing import Any

from .backend_interface import Backend, GenRequest, GenResult, render_chatml
from .errors import (
    BackendTimeout,
    BackendUnavailable,
    BadGateway,
    InvalidRequest,
    ModelNotFoundError,
    Overloaded,
    PromptTooLong,
    ServingError,
)
from .prometheus import (
    BACKEND_ERRORS,
    BATCH_SECONDS,
    BATCH_SIZE,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    INSTANCES,
    PARSE_FAILURES,
    PREDICT_CALLS,
    QUEUE_DEPTH,
    REASONING_CAPPED,
    REASONING_TOKENS,
    REPAIRS,
    TOKENS,
    UNGROUNDED,
)
from .remote_backend import RemoteBackend
from .transformers_backend import TransformersBackend

__all__ = [
    "Backend", "GenRequest", "GenResult", "render_chatml", "make_backend",
    "TransformersBackend", "RemoteBackend",
    "ServingError", "InvalidRequest", "ModelNotFoundError", "Overloaded", "BackendUnavailable", "BadGateway",
    "BackendTimeout", "PromptTooLong",
    "HTTP_REQUESTS", "HTTP_LATENCY", "PREDICT_CALLS", "INSTANCES", "PARSE_FAILURES", "REPAIRS", "UNGROUNDED", "TOKENS",
    "REASONING_TOKENS", "REASONING_CAPPED", "BATCH_SIZE", "BATCH_SECONDS", "QUEUE_DEPTH", "BACKEND_ERRORS",
]


def make_backend(settings: Any, model_dir: str | None) -> Backend:
    """The backend a :class:`ServeSettings` asks for."""
    if settings.backend == "remote":
        if not settings.remote_url:
            raise ValueError("backend 'remote' needs remote_url (e.g. http://ner-llm-predictor/openai/v1)")
        return RemoteBackend(
            settings.remote_url, settings.remote_model or settings.model_name,
            api_key=os.environ.get(settings.remote_api_key_env) or None, timeout_s=settings.request_timeout_s,
            max_concurrency=settings.remote_max_concurrency, structured_output=settings.remote_structured_output,
        )
    if not model_dir:
        raise ValueError("backend 'transformers' needs a model directory (--model)")
    return TransformersBackend(model_dir, max_batch_size=settings.max_batch_size, max_batch_wait_ms=settings.max_batch_wait_ms,
                               max_queue=settings.max_queue, device=settings.device, dtype=settings.dtype,
                               torch_threads=settings.torch_threads)
