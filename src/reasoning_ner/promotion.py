"""The promotion gate and a model registry on any fsspec filesystem.

Layout under ``registry_uri`` (a local folder by default, ``s3://bucket/prefix`` on MinIO/S3 in a
cluster, same code):

* ``versions/<version>.json``: one record per candidate ever gated (model URI, metrics, lineage,
  time, decision and reason);
* ``champion.json``: the current champion version plus the stack of earlier champions, which is
  what ``--rollback`` pops. Serving and the Helm chart read this pointer.

A candidate is promoted only if it clears the configured floors and is at least as good as the
current champion on the gate metric (``candidate >= champion - tolerance``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import fsspec

from .config import PromotionSection


@dataclass
class Decision:
    promoted: bool
    reason: str
    version: str
    gate_metric: str
    candidate_value: float
    champion_version: str | None
    champion_value: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _read(self, *parts: str) -> dict[str, Any] | None:
        path = self._path(*parts)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "r") as fh:
            return json.load(fh)

    def _write(self, obj: dict[str, Any], *parts: str) -> None:
        path = self._path(*parts)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = path + ".tmp"
        with self.fs.open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2)
        self.fs.mv(tmp, path)  # a rename on local disks; object stores write the key in one go

    def champion(self) -> dict[str, Any] | None:
        """The champion pointer (``version``, ``model_uri``, ``history``) or None."""
        return self._read("champion.json")

    def version(self, version: str) -> dict[str, Any] | None:
        return self._read("versions", f"{version}.json")

    def record(self, record: dict[str, Any]) -> None:
        self._write(record, "versions", f"{record['version']}.json")

    def set_champion(self, version: str, model_uri: str, history: list[str]) -> None:
        self._write({"version": version, "model_uri": model_uri, "history": history,
                     "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, "champion.json")


def gate_value(report: dict[str, Any], suite: str, metric: str) -> tuple[float, float]:
    """(macro gate metric, mean parse rate) of a report's suite; clear error when it is absent."""
    suites = report.get("suites", {})
    if suite not in suites:
        raise ValueError(f"the report has no '{suite}' suite (it has {sorted(suites)}); run `rner eval run --suite {suite}`")
    s = suites[suite]
    return float(s["macro"][metric]), float(s.get("mean_parse_rate", 0.0))


def make_version(model_uri: str, report: dict[str, Any]) -> str:
    digest = hashlib.sha256((model_uri + json.dumps(report.get("lineage", {}), sort_keys=True)).encode()).hexdigest()[:8]
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{digest}"


def promote(report: dict[str, Any], model_uri: str, cfg: PromotionSection, registry: Registry, version: str | None = None) -> Decision:
    """Gate a candidate; record the decision; move the champion pointer only on promotion."""
    value, parse_rate = gate_value(report, cfg.gate_suite, cfg.gate_metric)
    version = version or make_version(model_uri, report)
    metric_name = f"{cfg.gate_suite}/{cfg.gate_metric}"
    champion = registry.champion()
    champ_value = None
    if champion is not None:
        champ_record = registry.version(champion["version"]) or {}
        champ_value = champ_record.get("metrics", {}).get(metric_name)
    if value < cfg.min_gate_value:
        promoted, reason = False, f"{metric_name} {value:.4f} is below the floor {cfg.min_gate_value}"
    elif parse_rate < cfg.min_parse_rate:
        promoted, reason = False, f"parse rate {parse_rate:.3f} is below the floor {cfg.min_parse_rate}"
    elif champion is None:
        promoted, reason = True, f"no champion yet; {metric_name} {value:.4f} clears the floors"
    elif champ_value is None:
        promoted, reason = True, f"champion {champion['version']} has no {metric_name}; candidate {value:.4f} replaces it"
    elif value >= champ_value - cfg.tolerance:
        promoted, reason = True, f"{metric_name} {value:.4f} >= champion {champion['version']} {champ_value:.4f} (tolerance {cfg.tolerance})"
    else:
        promoted, reason = False, f"{metric_name} {value:.4f} < champion {champion['version']} {champ_value:.4f} (tolerance {cfg.tolerance})"
    decision = Decision(promoted, reason, version, metric_name, value, champion["version"] if champion else None, champ_value)
    registry.record({
        "version": version,
        "model_uri": model_uri,
        "metrics": {metric_name: value, f"{cfg.gate_suite}/mean_parse_rate": parse_rate,
                    **{f"{s}/{m}": v for s, suite in report.get("suites", {}).items() for m, v in suite["macro"].items()}},
        "lineage": report.get("lineage", {}),
        "model": report.get("model"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "decision": decision.to_dict(),
    })
    if promoted:
        history = ([champion["version"]] + champion.get("history", [])) if champion else []
        registry.set_champion(version, model_uri, history)
    return decision


def rollback(registry: Registry) -> dict[str, Any]:
    """Move the champion back to the previous one; error when there is none."""
    champion = registry.champion()
    if champion is None or not champion.get("history"):
        raise ValueError("no earlier champion to roll back to")
    previous, *rest = champion["history"]
    record = registry.version(previous)
    if record is None:
        raise ValueError(f"registry has no record for version {previous}")
    registry.set_champion(previous, record["model_uri"], rest)
    return {"rolled_back_from": champion["version"], "champion": previous, "model_uri": record["model_uri"]}
