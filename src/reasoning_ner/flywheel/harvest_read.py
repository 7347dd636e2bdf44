"""Harvest, part 1: the logged window read back, bad lines counted by reason, duplicates grouped.

The sink writes ``<log_root>/date=YYYY-MM-DD/part-*.jsonl`` (:mod:`reasoning_ner.flywheel.sink`).
Here every line of the window's parts is checked on its own: a line that is not UTF-8, not a JSON
object, has no text, no label list, or is oversized is skipped and counted under its reason, so one
bad record never costs the rest of its part. Records of the same sentence asked with the same label
set (normalised as the validation gate's leakage key) become one :class:`Sentence` that keeps every
logged sample: two samples that disagree are an uncertainty signal (:mod:`.harvest_sample`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..validation_frames import normalize_sentence
from .events import MAX_BODY_BYTES
from .sink import PARTITION


@dataclass
class Sentence:
    """One distinct (sentence, label set) of the window with all its logged samples."""

    key: str
    text: str
    labels: list[str]
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "traffic-" + hashlib.sha256(self.key.encode()).hexdigest()[:16]


@dataclass
class Window:
    """What a window held: the distinct sentences, the parts read and every skip by reason."""

    sentences: list[Sentence]
    parts: list[dict[str, Any]]
    lines: int = 0
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def days(since: dt.date, until: dt.date) -> list[dt.date]:
    if until < since:
        raise ValueError(f"the window ends ({until}) before it starts ({since})")
    return [since + dt.timedelta(days=i) for i in range((until - since).days + 1)]


def dedup_key(text: str, labels: list[str]) -> str:
    return normalize_sentence(text) + "\x1f" + "\x1f".join(sorted({label.strip().casefold() for label in labels}))


def check_line(raw: bytes, max_text_chars: int, opt_out: frozenset[str]) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a usable line, (None, reason) otherwise."""
    if len(raw) > MAX_BODY_BYTES:
        return None, "line_too_large"
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not_utf8"
    except json.JSONDecodeError:
        return None, "malformed_json"
    if not isinstance(obj, dict):
        return None, "not_an_object"
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        return None, "missing_text"
    labels = obj.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        return None, "missing_labels"
    if len(text) > max_text_chars:
        return None, "text_too_long"
    if opt_out & {x.strip() for x in labels}:
        return None, "opted_out"  # the sink drops these; a part written before the opt-out still holds them
    if not isinstance(obj.get("entities", []), list) or not isinstance(obj.get("ungrounded", []), list):
        return None, "malformed_predictions"
    return obj, None


def list_parts(log_root: str, since: dt.date, until: dt.date) -> tuple[Any, list[str]]:
    """The fsspec filesystem and the window's part files, oldest day first."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(log_root.rstrip("/"))
    parts: list[str] = []
    for day in days(since, until):
        parts += sorted(fs.glob(f"{root}/{PARTITION}{day.isoformat()}/*.jsonl"))
    return fs, parts


def _lines(data: bytes) -> Iterator[bytes]:
    for raw in data.split(b"\n"):
        if raw.strip():
            yield raw


def read_window(
    log_root: str, since: dt.date, until: dt.date, max_text_chars: int, opt_out: frozenset[str] = frozenset(),
    progress: bool = False,
) -> Window:
    """Read, check and group every logged record of ``since``..``until`` (both included)."""
    from rich.progress import Progress

    fs, paths = list_parts(log_root, since, until)
    window = Window(sentences=[], parts=[])
    by_key: dict[str, Sentence] = {}
    with Progress(disable=not progress) as bar:
        task = bar.add_task("read logged parts", total=len(paths))
        for path in paths:
            data = fs.cat_file(path)
            info = fs.info(path)
            part = {"path": fs.unstrip_protocol(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                    "etag": (info.get("ETag") or info.get("etag") or "").strip('"') or None, "records": 0, "skipped": 0}
            for raw in _lines(data):
                window.lines += 1
                record, reason = check_line(raw, max_text_chars, opt_out)
                if record is None:
                    window.skipped[reason or "?"] += 1
                    part["skipped"] += 1
                    continue
                part["records"] += 1
                window.records += 1
                key = dedup_key(record["text"], record["labels"])
                if key not in by_key:
                    labels = list(dict.fromkeys(x.strip() for x in record["labels"]))
                    by_key[key] = Sentence(key, record["text"], labels)
                by_key[key].samples.append(record)
            window.parts.append(part)
            bar.advance(task)
    window.sentences = list(by_key.values())
    return window


def reference_sentence_files(data_cfg: Any) -> list[Path]:
    """The parity evaluation files (InstructUIE test sets) of the prepared data, for the sentence drop only."""
    return sorted(Path(data_cfg.prepared_dir).glob("*/reference-*.jsonl"))


def evaluation_files(data_cfg: Any, scratch: Path) -> tuple[list[Path], str]:
    """Every evaluation split, zero-shot and supervised, as canonical JSONL files (and where they came from).

    The prepared data (``data.prepared_dir``, as the pipeline's fetch step provides it) when it is
    there: its ``*/test.jsonl``, ``*/dev.jsonl`` and every file of a zero-shot dataset. Otherwise the
    raw datasets (``data.source_dir``) read through the data catalog: the test and dev splits of
    every dataset and all splits of the zero-shot ones, written under ``scratch``. Neither: an error,
    since harvesting without them could leak evaluation sentences into training data.
    """
    from ..data.catalog import CATALOG, available_splits, iter_split
    from ..records import write_jsonl
    from ..validation_frames import find_eval_files

    zero_shot = set(data_cfg.zero_shot_datasets)
    prepared = Path(data_cfg.prepared_dir)
    if prepared.is_dir() and any(prepared.glob("*/test.jsonl")):
        # reference-*.jsonl are parity copies of a test split with the same ids: the gate would see
        # every id twice. Their sentences still leave the harvest (reference_sentence_files).
        files = set(find_eval_files(prepared)) | {p for name in zero_shot for p in prepared.glob(f"{name}/*.jsonl")
                                                   if not p.name.startswith("reference-")}
        return sorted(files), f"prepared data {prepared}"
    source = Path(data_cfg.source_dir)
    if not source.is_dir():
        raise FileNotFoundError(
            f"no evaluation data to exclude: neither prepared data at data.prepared_dir={prepared} nor raw datasets at "
            f"data.source_dir={source} (set RNER_DATA_DIR); harvesting without them could leak evaluation sentences")
    files = []
    for name, spec in CATALOG.items():
        try:
            splits = available_splits(spec, source, data_cfg.source_format)
        except (FileNotFoundError, ValueError):
            continue  # a dataset not in this copy of the data (or without this format) cannot leak from it
        for split in splits:
            if split in ("test", "dev") or name in zero_shot:
                out = scratch / name / f"{split}.jsonl"
                write_jsonl(out, iter_split(spec, split, source, data_cfg.source_format, data_cfg.keep_invalid_labels))
                files.append(out)
    if not files:
        raise FileNotFoundError(f"data.source_dir={source} holds none of the catalog's datasets")
    return files, f"raw datasets {source} (data catalog)"
