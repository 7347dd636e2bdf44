"""The NER service: a ``kserve.Model`` with V1/V2 predict routes, an OpenAI-compatible chat route,
Prometheus metrics, dynamic batching on CPU and a remote vLLM backend on GPU clusters.

Public API::

    from reasoning_ner.serving import ServeSettings, build_model, build_app, serve

    settings = ServeSettings(max_new_tokens=96, prompt_style="compact")
    model = build_model(settings, "work/models/grpo")   # loads the model
    app = build_app(model)                              # FastAPI app (TestClient, embedding)
    serve(settings, "work/models/grpo")                 # kserve ModelServer on settings.host:port

See ``docs/serving.md``. Heavy imports (torch, kserve) happen only when these are used.
"""

from __future__ import annotations

from typing import Any

from .schemas import ServeSettings, settings_from_config

__all__ = ["ServeSettings", "settings_from_config", "build_model", "build_app", "serve", "NERModel",
           "TransformersBackend", "RemoteBackend"]


def __getattr__(name: str) -> Any:
    if name in ("build_model", "build_app", "serve"):
        from . import server

        return getattr(server, name)
    if name == "NERModel":
        from .model import NERModel

        return NERModel
    if name in ("TransformersBackend", "RemoteBackend"):
        from . import backends

        return getattr(backends, name)
    raise AttributeError(name)
