"""The canonical NER record every stage reads and writes (one JSON object per line).

``text[start:end] == entity.text`` holds for every entity: offsets are character offsets into
``text``, end exclusive. ``schema`` is the label set offered to the model for this record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A record that breaks the canonical format; the message names the record and the field."""


@dataclass(frozen=True, order=True)
class Entity:
    start: int
    end: int
    label: str
    text: str

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Entity:
        return cls(start=int(d["start"]), end=int(d["end"]), label=str(d["label"]), text=str(d["text"]))


@dataclass
class NERRecord:
    id: str
    text: str
    entities: list[Entity]
    schema: list[str]
    dataset: str
    split: str
    source_format: str = "native"
    cot: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for i, ent in enumerate(self.entities):
            if not (0 <= ent.start < ent.end <= len(self.text)):
                raise RecordError(f"record {self.id}: entities[{i}] offsets [{ent.start}, {ent.end}) out of range")
            if self.text[ent.start : ent.end] != ent.text:
                raise RecordError(
                    f"record {self.id}: entities[{i}] text {ent.text!r} != text[{ent.start}:{ent.end}] "
                    f"{self.text[ent.start:ent.end]!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["cot"] is None:
            del d["cot"]
        if not d["meta"]:
            del d["meta"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NERRecord:
        missing = [k for k in ("id", "text", "entities", "schema") if k not in d]
        if missing:
            raise RecordError(f"record {d.get('id', '?')}: missing field(s) {', '.join(missing)}")
        try:
            entities = [Entity.from_dict(e) for e in d["entities"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"record {d.get('id')}: bad entity ({exc})") from exc
        return cls(
            id=str(d["id"]),
            text=str(d["text"]),
            entities=entities,
            schema=[str(s) for s in d["schema"]],
            dataset=str(d.get("dataset", "")),
            split=str(d.get("split", "")),
            source_format=str(d.get("source_format", "native")),
            cot=d.get("cot"),
            meta=dict(d.get("meta") or {}),
        )

    def grouped_spans(self) -> dict[str, list[str]]:
        """Entities as ``{label: [span, ...]}``: labels in first-appearance order, spans deduplicated."""
        grouped: dict[str, list[str]] = {}
        for ent in sorted(self.entities, key=lambda e: (e.start, e.end)):
            spans = grouped.setdefault(ent.label, [])
            if ent.text not in spans:
                spans.append(ent.text)
        return grouped


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield JSON objects from a JSONL file; a bad line raises with the file and line number."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.rstrip("\r\n"))  # the error column counts within the line
            except json.JSONDecodeError as exc:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(obj, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield obj


def read_records(path: str | os.PathLike[str]) -> list[NERRecord]:
    return [NERRecord.from_dict(obj) for obj in read_jsonl(path)]


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any] | NERRecord]) -> int:
    """Write rows atomically (temp file + rename): a crash never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            obj = row.to_dict() if isinstance(row, NERRecord) else row
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
