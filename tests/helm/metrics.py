"""The metric names the dashboard and the alerts may use.

The NER service's names are the ones its modules register with prometheus_client when imported
(wherever in ``reasoning_ner.serving`` they are declared), so a renamed metric breaks the test, not
the dashboard; vLLM's and kube-state-metrics' names are the documented ones this chart assumes.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

#: vLLM (served through KServe's Hugging Face runtime) and kube-state-metrics names assumed here.
VLLM = {"vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total", "vllm:e2e_request_latency_seconds_bucket"}
KUBE_STATE = {"kube_deployment_status_replicas_available"}


def service_metrics() -> set[str]:
    """Every series name the NER service exports (counters as ``_total``, histograms as
    ``_bucket``/``_sum``/``_count``), from prometheus_client's registry after importing the service."""
    import prometheus_client

    import reasoning_ner.serving as serving

    for module in pkgutil.iter_modules(serving.__path__):
        importlib.import_module(f"{serving.__name__}.{module.name}")
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    return {family.name + suffix for family in prometheus_client.REGISTRY.collect() if family.name.startswith("rner_")
            for suffix in suffixes.get(family.type, ("",))}


def used_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers followed by a selector or range)."""
    return set(re.findall(r"\b((?:rner_|vllm:|kube_)[A-Za-z0-9_:]+)\s*[{\[]", expr))
