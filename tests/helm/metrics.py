"""The metric names the dashboard and the alerts may use.

The NER service's names are read from its source (``reasoning_ner.serving.backends``, where the
prometheus_client metrics are declared) so a renamed metric breaks the test, not the dashboard;
vLLM's and kube-state-metrics' names are the documented ones this chart assumes.
"""

from __future__ import annotations

import re
from pathlib import Path

from .chart_tools import REPO_ROOT

BACKENDS = REPO_ROOT / "src" / "reasoning_ner" / "serving" / "backends.py"

#: vLLM (served through KServe's Hugging Face runtime) and kube-state-metrics names assumed here.
VLLM = {"vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:generation_tokens_total",
        "vllm:prompt_tokens_total", "vllm:e2e_request_latency_seconds_bucket"}
KUBE_STATE = {"kube_deployment_status_replicas_available"}


def service_metrics() -> set[str] | None:
    """Every series name the NER service exports (histograms with _bucket/_sum/_count), or None."""
    if not BACKENDS.is_file():
        return None
    names: set[str] = set()
    for kind, name in re.findall(r"\b(Counter|Gauge|Histogram)\(\s*\"(rner_[a-z_]+)\"", BACKENDS.read_text()):
        if kind == "Counter":
            names.add(name if name.endswith("_total") else name + "_total")
        elif kind == "Histogram":
            names.update({name + "_bucket", name + "_sum", name + "_count"})
        else:
            names.add(name)
    return names


def used_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers followed by a selector or range)."""
    return set(re.findall(r"\b((?:rner_|vllm:|kube_)[A-Za-z0-9_:]+)\s*[{\[]", expr))
