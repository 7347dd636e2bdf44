"""The promotion gate and a model registry on any fsspec filesystem.

Layout under ``registry_uri`` (a local folder by default, ``s3://bucket/prefix`` on MinIO/S3 in a
cluster, same code):

* ``models/<version>/``: a copy of every promoted model (Hugging Face folder). This is what serving
  reads: the deploy step points the InferenceService's ``storageUri`` here, in the serving store,
  never at a pipeline's artifact (KFP's own bucket and endpoint, which KServe cannot read);
* ``versions/<version>.json``: one record per candidate ever gated (model URI, metrics, lineage,
  time, decision and reason);
* ``champion.json``: the current champion version plus the stack of earlier champions, which is
  what ``--rollback`` pops. Serving and the Helm chart read this pointer.

A candidate is promoted only if it clears the configured floors and is at least as good as the
current champion on the gate metric (``candidate >= champion - tolerance``). The order of writes
keeps what is already promoted safe: the registry is checked before anything is gated, the model
is copied into a new ``models/<version>/`` (never over an existing one) and verified, then the
record is written, and the champion pointer moves last.

Credentials for ``s3://`` come from the environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for MinIO or any S3-compatible store), which the
chart's S3 Secret provides; storage problems raise :class:`RegistryError` naming the setting.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

import fsspec
import fsspec.implementations.local

from .config import PromotionSection
from .flywheel.baseline import BASELINE_FILE

#: A model folder holds these (Hugging Face format); checked before a copy is promoted.
MODEL_MARKERS = ("config.json",)


class RegistryError(RuntimeError):
    """The registry or a model cannot be read or written; the message names the setting to fix."""


@dataclass
class Decision:
    promoted: bool
    reason: str
    version: str
    gate_metric: str
    candidate_value: float
    champion_version: str | None
    champion_value: float | None
    model_uri: str | None = None  # where the promoted copy lives (what serving reads); None when refused

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _storage_hint(uri: str, exc: BaseException) -> str:
    """Why storage at ``uri`` failed, naming the setting a user changes."""
    text = f"{type(exc).__name__}: {exc}"
    if not uri.startswith("s3://"):
        return f"{uri}: {text}"
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS S3 (AWS_ENDPOINT_URL is not set)"
    bucket = uri[len("s3://"):].split("/", 1)[0]
    lowered = text.lower()
    if "nocredentials" in lowered or "unable to locate credentials" in lowered:
        why = "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the S3 Secret)"
    elif any(k in lowered for k in ("invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied", "forbidden", "permissionerror")):
        why = "S3 refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the S3 Secret) and their rights on the bucket"
    elif "nosuchbucket" in lowered or isinstance(exc, FileNotFoundError):
        why = f"bucket {bucket!r} does not exist at {endpoint}: create it, or fix the bucket in the registry URI"
    elif any(k in lowered for k in ("connect", "endpoint", "timeout", "name or service", "resolve")):
        why = f"cannot reach the S3 endpoint {endpoint}: check AWS_ENDPOINT_URL"
    else:
        why = f"S3 error at {endpoint}"
    return f"registry {uri}: {why} ({text})"


class Registry:
    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        except ImportError as exc:  # s3:// without s3fs, gs:// without gcsfs, ...
            raise RegistryError(f"registry {uri}: {exc}") from exc

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

    def check(self) -> None:
        """Fail early, naming the setting, when the registry cannot be reached: a missing bucket,
        refused or missing credentials, an unreachable endpoint. Called before anything is gated."""
        try:
            if self.uri.startswith("s3://"):
                self.fs.ls(self.root.split("/", 1)[0], refresh=True)
            else:
                self.fs.makedirs(self.root, exist_ok=True)
        except Exception as exc:  # noqa: BLE001 - every storage failure becomes one message naming the setting
            raise RegistryError(_storage_hint(self.uri, exc)) from exc

    def model_uri(self, version: str) -> str:
        """Where version ``version``'s model lives in the registry (what serving reads)."""
        return f"{self.uri}/models/{version}"

    def publish_model(self, source: str, version: str, progress: bool = False) -> str:
        """Copy the model folder ``source`` (a local folder or any fsspec URI) to ``models/<version>/``,
        check every file arrived with its size, and return the registry URI of the copy.

        A version that exists already is refused: a registry copy is never overwritten.
        """
        src_fs, src_root = fsspec.core.url_to_fs(source)
        src_root = src_root.rstrip("/")
        if not src_fs.isdir(src_root) or not all(src_fs.exists(f"{src_root}/{m}") for m in MODEL_MARKERS):
            raise RegistryError(f"model {source} is not a model folder (no {', '.join(MODEL_MARKERS)}); "
                                "pass the folder `rner train` exported")
        files = {path[len(src_root) + 1:]: int(info["size"])
                 for path, info in src_fs.find(src_root, detail=True).items()}
        dest = self._path("models", version)
        uri = self.model_uri(version)
        try:
            if self.fs.exists(dest):
                raise RegistryError(f"{uri} exists already; a registry version is never overwritten")
            local = isinstance(src_fs, fsspec.implementations.local.LocalFileSystem)
            for rel in _progress(sorted(files), f"copying the model to {uri}", progress):
                self.fs.makedirs(f"{dest}/{rel}".rsplit("/", 1)[0], exist_ok=True)  # local folders; no-op on S3
                if local:
                    self.fs.put_file(f"{src_root}/{rel}", f"{dest}/{rel}")
                else:
                    with src_fs.open(f"{src_root}/{rel}", "rb") as r, self.fs.open(f"{dest}/{rel}", "wb") as w:
                        shutil.copyfileobj(r, w, 16 * 2**20)
            copied = {path[len(dest) + 1:]: int(info["size"])
                      for path, info in self.fs.find(dest, detail=True).items()}
        except RegistryError:
            raise
        except Exception as exc:  # noqa: BLE001 - named, with the setting to fix
            raise RegistryError(_storage_hint(self.uri, exc)) from exc
        if copied != files:
            missing = sorted(set(files) - set(copied)) or sorted(k for k in files if copied.get(k) != files[k])
            raise RegistryError(f"copy of {source} to {uri} is incomplete ({missing[:5]}); the champion was not moved")
        return uri

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


def _progress(items: list[str], description: str, show: bool) -> Any:
    if not show:
        return items
    from rich.progress import track

    return track(items, description=description, transient=True)


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


def _judge(value: float, parse_rate: float, report: dict[str, Any], cfg: PromotionSection,
           champion: dict[str, Any] | None, champ_record: dict[str, Any]) -> tuple[bool, str]:
    """(promoted, reason) under the floors and ``cfg.rule``."""
    metric_name = f"{cfg.gate_suite}/{cfg.gate_metric}"
    champ_value = champ_record.get("metrics", {}).get(metric_name)
    if value < cfg.min_gate_value:
        return False, f"{metric_name} {value:.4f} is below the floor {cfg.min_gate_value}"
    if parse_rate < cfg.min_parse_rate:
        return False, f"parse rate {parse_rate:.3f} is below the floor {cfg.min_parse_rate}"
    if champion is None:
        return True, f"no champion yet; {metric_name} {value:.4f} clears the floors"
    if cfg.rule == "no-zero-shot-regression":
        return _zero_shot_rule(report, cfg, champion["version"], champ_record)
    if champ_value is None:
        return True, f"champion {champion['version']} has no {metric_name}; candidate {value:.4f} replaces it"
    if value >= champ_value - cfg.tolerance:
        return True, f"{metric_name} {value:.4f} >= champion {champion['version']} {champ_value:.4f} (tolerance {cfg.tolerance})"
    return False, f"{metric_name} {value:.4f} < champion {champion['version']} {champ_value:.4f} (tolerance {cfg.tolerance})"


def _zero_shot_rule(report: dict[str, Any], cfg: PromotionSection, champ_version: str,
                    champ_record: dict[str, Any]) -> tuple[bool, str]:
    """The refresh rule: the zero-shot suite may not regress by more than ``zero_shot_tolerance``.

    Harvested traffic pulls the model towards the served domains; the frozen zero-shot suite is
    what says the paper's generalisation survived that pull.
    """
    name = f"zero-shot/{cfg.gate_metric}"
    value, _ = gate_value(report, "zero-shot", cfg.gate_metric)
    champ_value = champ_record.get("metrics", {}).get(name)
    rule = f"zero-shot regression tolerance {cfg.zero_shot_tolerance}"
    if champ_value is None:  # nothing to regress against: a champion gated before zero-shot was recorded
        return False, f"champion {champ_version} has no {name} to compare with ({rule}); evaluate it on zero-shot first"
    drop = champ_value - value
    if drop <= cfg.zero_shot_tolerance:
        return True, (f"{name} {value:.4f} vs champion {champ_version} {champ_value:.4f}: drop {drop:.4f} "
                      f"within the {rule}")
    return False, (f"{name} {value:.4f} vs champion {champ_version} {champ_value:.4f}: drop {drop:.4f} "
                   f"exceeds the {rule}")


def promote(report: dict[str, Any], model: str, cfg: PromotionSection, registry: Registry, version: str | None = None,
            progress: bool = False) -> Decision:
    """Gate the candidate ``model`` (its folder: local or any fsspec URI) and record the decision.

    On promotion the model is copied to ``models/<version>/`` in the registry first, and the champion
    pointer then names that copy (``Decision.model_uri``), which is what the deploy step serves.
    ``cfg.rule`` picks the comparison with the champion (:func:`_judge`).
    """
    value, parse_rate = gate_value(report, cfg.gate_suite, cfg.gate_metric)
    registry.check()
    version = version or make_version(model, report)
    metric_name = f"{cfg.gate_suite}/{cfg.gate_metric}"
    champion = registry.champion()
    champ_record = (registry.version(champion["version"]) or {}) if champion is not None else {}
    champ_value = champ_record.get("metrics", {}).get(metric_name)
    promoted, reason = _judge(value, parse_rate, report, cfg, champion, champ_record)
    # The copy comes before the record and the pointer: a failed copy leaves the champion as it was.
    model_uri = registry.publish_model(model, version, progress=progress) if promoted else None
    if model_uri is not None and report.get("drift_baseline"):  # the server's drift baseline travels with the model
        registry._write(report["drift_baseline"], "models", version, BASELINE_FILE)
    decision = Decision(promoted, reason, version, metric_name, value, champion["version"] if champion else None,
                        champ_value, model_uri)
    registry.record({
        "version": version,
        "model_uri": model_uri,
        "source_uri": model,
        "metrics": {metric_name: value, f"{cfg.gate_suite}/mean_parse_rate": parse_rate,
                    **{f"{s}/{m}": v for s, suite in report.get("suites", {}).items() for m, v in suite["macro"].items()}},
        "lineage": report.get("lineage", {}),
        "model": report.get("model"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "decision": decision.to_dict(),
    })
    if model_uri is not None:
        history = ([champion["version"]] + champion.get("history", [])) if champion else []
        registry.set_champion(version, model_uri, history)
    return decision


def rollback(registry: Registry) -> dict[str, Any]:
    """Move the champion back to the previous one; error when there is none (or its copy is gone)."""
    registry.check()
    champion = registry.champion()
    if champion is None or not champion.get("history"):
        raise ValueError("no earlier champion to roll back to")
    previous, *rest = champion["history"]
    record = registry.version(previous)
    if record is None:
        raise ValueError(f"registry has no record for version {previous}")
    if not record.get("model_uri") or not registry.fs.exists(registry._path("models", previous, MODEL_MARKERS[0])):
        raise ValueError(f"version {previous} has no model copy at {registry.model_uri(previous)}; the champion stays "
                         f"{champion['version']}")
    registry.set_champion(previous, record["model_uri"], rest)
    return {"rolled_back_from": champion["version"], "champion": previous, "model_uri": record["model_uri"]}
