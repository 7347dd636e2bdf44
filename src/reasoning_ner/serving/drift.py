"""Drift metrics: what live traffic asks and gets, next to the champion's evaluation-time baseline.

Per sentence the service records, per label asked, one sentence and the grounded entities returned
for it (entity rate = entities / sentences), and the rendered prompt's length; parse failures and
ungrounded spans are the existing counters (:mod:`.prometheus`). Label values are user input, so
they are normalised (:func:`flywheel.baseline.metric_label`) and at most ``drift_max_labels``
distinct values get a series; later ones count under ``__other__``. The baseline
(``drift_baseline.json``, :mod:`reasoning_ner.flywheel.baseline`) is exported as gauges.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from ..flywheel.baseline import BASELINE_FILE, metric_label, read_baseline
from .prometheus import (
    BASELINE_ENTITY_RATE,
    BASELINE_PARSE_ERROR_RATE,
    BASELINE_PROMPT_CHARS,
    BASELINE_UNGROUNDED_RATE,
    DRIFT_LABEL_ENTITIES,
    DRIFT_LABEL_SENTENCES,
    PROMPT_CHARS,
)
from .schemas import Prediction

log = logging.getLogger(__name__)
OVERFLOW_LABEL = "__other__"


class LabelCap:
    """Maps raw labels to metric label values: normalised, first ``limit`` distinct values kept."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, raw: str) -> str:
        label = metric_label(raw)
        with self._lock:
            if label in self.seen:
                return label
            if len(self.seen) < self.limit:
                self.seen.add(label)
                return label
        return OVERFLOW_LABEL

    def admit(self, labels: list[str]) -> None:
        """Reserve series for known labels first (the baseline's), so they are never pushed into overflow."""
        for label in labels:
            self(label)


class DriftRecorder:
    """Records one served sentence into the drift metrics."""

    def __init__(self, max_labels: int):
        self.cap = LabelCap(max_labels)

    def record(self, labels: list[str], prediction: Prediction, prompt_chars: int) -> None:
        asked: dict[str, str] = {}  # normalised -> series label; duplicates after normalising count once
        for raw in labels:
            asked.setdefault(metric_label(raw), self.cap(raw))
        for series in asked.values():
            DRIFT_LABEL_SENTENCES.labels(series).inc()
        for entity in prediction.entities:
            series = asked.get(metric_label(entity.label))
            if series is not None:
                DRIFT_LABEL_ENTITIES.labels(series).inc()
        PROMPT_CHARS.observe(prompt_chars)


def baseline_location(configured: str | None, model_dir: str | None) -> str | None:
    """``serve.drift_baseline`` when set, else ``<model folder>/drift_baseline.json`` (in process)."""
    if configured:
        return configured
    return str(Path(model_dir) / BASELINE_FILE) if model_dir else None


def export_baseline(location: str | None, cap: LabelCap, model_version: str | None = None) -> dict[str, Any] | None:
    """Set the baseline gauges from ``location``; no file (or a bad one) = no baseline series and a log line.

    The labels asked most often at evaluation time get series first, within the same cap as live traffic."""
    for gauge in (BASELINE_ENTITY_RATE, BASELINE_PARSE_ERROR_RATE, BASELINE_PROMPT_CHARS, BASELINE_UNGROUNDED_RATE):
        gauge.clear()  # no baseline = no series (a 0 would read as "nothing is normal")
    if location is None:
        log.info("no drift baseline: no model folder and serve.drift_baseline is unset; drift alerts stay silent")
        return None
    try:
        baseline = read_baseline(location)
    except (ValueError, OSError) as exc:
        log.error("drift baseline ignored: %s", exc)
        return None
    if baseline is None:
        log.info("no drift baseline at %s (models evaluated before drift baselines have none); drift alerts stay silent",
                 location)
        return None
    version = model_version or ""
    BASELINE_PARSE_ERROR_RATE.labels(version).set(baseline["parse_error_rate"])
    BASELINE_UNGROUNDED_RATE.labels(version).set(baseline["ungrounded_rate"])
    BASELINE_PROMPT_CHARS.labels(version).set(baseline["prompt_chars_mean"])
    by_use = sorted(baseline["labels"].items(), key=lambda kv: (-kv[1]["sentences"], kv[0]))
    cap.admit([label for label, _ in by_use])
    for label, entry in by_use:
        series = cap(label)
        if series != OVERFLOW_LABEL:
            BASELINE_ENTITY_RATE.labels(series).set(entry["entity_rate"])
    log.info("drift baseline from %s: %d labels, %d sentences", location, len(baseline["labels"]), baseline.get("sentences", 0))
    return baseline
