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

# Drift (serving/drift.py, docs/flywheel.md "Watch"): live traffic next to the champion's evaluation-time
# baseline. Label values are user input: normalised and capped at serve.drift_max_labels series.
DRIFT_LABEL_SENTENCES = Counter("rner_drift_label_sentences_total",
                                "Sentences asked with a label (normalised; labels past the cap count as __other__).", ["label"])
DRIFT_LABEL_ENTITIES = Counter("rner_drift_label_entities_total",
                               "Grounded entities returned for a label (normalised; past the cap: __other__).", ["label"])
PROMPT_CHARS = Histogram("rner_prompt_chars", "Characters of the rendered user prompt per sentence.",
                         buckets=(100, 200, 300, 400, 600, 800, 1200, 1600, 2400, 3200, 4800, 6400))
BASELINE_ENTITY_RATE = Gauge("rner_drift_baseline_entity_rate",
                             "Evaluation-time entities per sentence asked with the label (the served model's baseline).", ["label"])
# Labelled by the served version so that without a baseline there is no series at all (alerts stay silent).
BASELINE_PARSE_ERROR_RATE = Gauge("rner_drift_baseline_parse_error_rate", "Evaluation-time share of unparseable answers.",
                                  ["model_version"])
BASELINE_UNGROUNDED_RATE = Gauge("rner_drift_baseline_ungrounded_rate", "Evaluation-time ungrounded spans per sentence.",
                                 ["model_version"])
BASELINE_PROMPT_CHARS = Gauge("rner_drift_baseline_prompt_chars", "Evaluation-time mean characters of the rendered user prompt.",
                              ["model_version"])
