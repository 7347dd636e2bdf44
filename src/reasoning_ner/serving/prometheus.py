"""The service's Prometheus metrics.

On prometheus_client's default registry, which kserve's /metrics route exposes next to its own. One
module defines them all, so the chart's alerts and dashboard (tests/helm) check against one list.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("rner_http_requests_total", "HTTP requests by route template and status.", ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "rner_http_request_seconds", "HTTP request latency by route template.", ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PREDICT_CALLS = Counter("rner_predict_calls_total", "Requests that passed validation and reached a predict handler.", ["protocol"])
INSTANCES = Counter("rner_instances_total", "Sentences processed.", ["protocol"])
PARSE_FAILURES = Counter("rner_parse_failures_total", "Sentences whose model answer could not be parsed.")
REPAIRS = Counter("rner_answer_repairs_total", "Answers repaired (labels dropped, truncated JSON closed).", ["kind"])
UNGROUNDED = Counter("rner_ungrounded_spans_total", "Predicted spans that do not occur in the input.")
TOKENS = Counter("rner_tokens_total", "Tokens processed by the backend.", ["kind"])
REASONING_TOKENS = Histogram("rner_reasoning_tokens", "Thinking tokens per sentence (where known).",
                             buckets=(0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192))
REASONING_CAPPED = Counter("rner_reasoning_capped_total", "Sentences whose reasoning budget ran out (</think> forced).")
BATCH_SIZE = Histogram("rner_batch_size", "Sequences per batched generate call.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_SECONDS = Histogram("rner_batch_generate_seconds", "Wall time of one batched generate call.",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
QUEUE_DEPTH = Gauge("rner_queue_depth", "Sequences waiting for the in-process model.")
BACKEND_ERRORS = Counter("rner_backend_errors_total", "Backend failures by kind.", ["backend", "kind"])
