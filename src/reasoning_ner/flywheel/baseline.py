"""The drift baseline: what the champion's traffic looked like at evaluation time.

The evaluation computes, from its own predictions, the quantities the server exports live
(serving/drift.py): per label, sentences asked with it and grounded entities returned for it (the
entity rate per sentence is their ratio), parse errors and ungrounded spans per sentence, and the
rendered user prompt's length in characters. The result travels with the model: it is part of
report.json, promotion writes it into the registry copy as ``drift_baseline.json``, and the server
exports it as gauges that the chart's drift alerts compare live rates with (docs/flywheel.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import fsspec

from ..labels import clean_label
from ..prompt import render_prompt
from ..records import NERRecord

BASELINE_FILE = "drift_baseline.json"
FORMAT_VERSION = 1
#: Longest label value on a metric series; label sets are user input.
METRIC_LABEL_CHARS = 40
EMPTY_LABEL = "__empty__"


def drift_baseline_uri(model_uri: str) -> str:
    """Where promotion writes the baseline of the model at ``model_uri``: beside its files."""
    return f"{model_uri.rstrip('/')}/{BASELINE_FILE}"


def metric_label(raw: str) -> str:
    """A label as a metric series sees it: cleaned like training labels (lower-case, underscores and
    whitespace folded), unprintable characters dropped, at most ``METRIC_LABEL_CHARS`` long."""
    text = "".join(ch for ch in clean_label(raw) if ch.isprintable())[:METRIC_LABEL_CHARS].strip()
    return text or EMPTY_LABEL


def drift_counts(records: Sequence[NERRecord], rows: Iterable[dict[str, Any]], prompt_style: str) -> dict[str, Any]:
    """Raw counts over one suite's predictions (rows of :func:`inference.predict`, matched by id)."""
    by_id = {r.id: r for r in records}
    counts: dict[str, Any] = {"sentences": 0, "parse_errors": 0, "ungrounded": 0, "prompt_chars": 0, "labels": {}}
    for row in rows:
        record = by_id.get(row["id"])
        if record is None:
            raise ValueError(f"prediction row {row['id']!r} has no evaluation record; the baseline would be wrong")
        counts["sentences"] += 1
        counts["parse_errors"] += row.get("parse_error") is not None
        counts["ungrounded"] += len(row.get("ungrounded") or [])
        counts["prompt_chars"] += len(render_prompt(record.text, list(record.schema), prompt_style))
        asked = {metric_label(lbl) for lbl in record.schema}
        for label in asked:
            counts["labels"].setdefault(label, [0, 0])[0] += 1
        for entity in row.get("entities") or []:
            label = metric_label(entity["label"])
            if label in asked:
                counts["labels"][label][1] += 1
    return counts


def baseline_from_counts(parts: Sequence[dict[str, Any]], source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rates over the summed counts of several suites (what ``drift_baseline.json`` holds)."""
    total = {"sentences": 0, "parse_errors": 0, "ungrounded": 0, "prompt_chars": 0}
    labels: dict[str, list[int]] = {}
    for part in parts:
        for key in total:
            total[key] += part[key]
        for label, (asked, found) in part["labels"].items():
            acc = labels.setdefault(label, [0, 0])
            acc[0] += asked
            acc[1] += found
    n = max(1, total["sentences"])
    return {
        "format_version": FORMAT_VERSION,
        "source": source or {},
        "sentences": total["sentences"],
        "parse_error_rate": total["parse_errors"] / n,
        "ungrounded_rate": total["ungrounded"] / n,  # ungrounded spans per sentence
        "prompt_chars_mean": total["prompt_chars"] / n,
        "labels": {label: {"sentences": asked, "entities": found, "entity_rate": found / asked}
                   for label, (asked, found) in sorted(labels.items()) if asked},
    }


def read_baseline(location: str) -> dict[str, Any] | None:
    """The baseline at ``location`` (a path or any fsspec URI); None when there is no such file,
    ValueError naming the file and the problem when it is not a baseline."""
    fs, path = fsspec.core.url_to_fs(location)
    if not fs.isfile(path):
        return None
    with fs.open(path, "r", encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{location} is not JSON ({exc.msg}, line {exc.lineno})") from exc
    problems = _problems(data)
    if problems:
        raise ValueError(f"{location} is not a drift baseline: {'; '.join(problems)}")
    return data


def _problems(data: Any) -> list[str]:
    if not isinstance(data, dict):
        return ["the top level must be an object"]
    problems = []
    if data.get("format_version") != FORMAT_VERSION:
        problems.append(f"format_version must be {FORMAT_VERSION}, not {data.get('format_version')!r}")
    for key in ("parse_error_rate", "ungrounded_rate", "prompt_chars_mean"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            problems.append(f"{key} must be a number >= 0, not {value!r}")
    labels = data.get("labels")
    if not isinstance(labels, dict):
        problems.append("labels must be an object of label -> {sentences, entities, entity_rate}")
    else:
        for label, entry in labels.items():
            rate = entry.get("entity_rate") if isinstance(entry, dict) else None
            sentences = entry.get("sentences") if isinstance(entry, dict) else None
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0 or not isinstance(sentences, int):
                problems.append(f"labels[{label!r}] needs an integer sentences and a number entity_rate >= 0")
                break
    return problems
