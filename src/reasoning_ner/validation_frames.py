"""The validation gate's input: JSONL files read and flattened into the three frames GX validates.

``records`` has one row per record of every file, ``entities`` one per entity, ``training`` one per
training record (see :mod:`reasoning_ner.validation`). Row-level logic GX cannot express on pandas
is computed here as *problem* columns: ``None`` when the row is fine, otherwise a short description
of what is wrong, which the suites then expect to be null.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import RecordError, read_jsonl

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

REQUIRED_FIELDS = ("id", "text", "entities", "schema", "dataset", "split")
_VALUE_CHARS = 160

#: One input file and its parsed records.
Loaded = tuple[Path, list[dict[str, Any]]]


def find_eval_files(prepared_dir: str | os.PathLike[str]) -> list[Path]:
    """Every ``*/test.jsonl`` and ``*/dev.jsonl`` under a prepared-data folder (``--eval-dir``)."""
    root = Path(prepared_dir)
    if not root.is_dir():
        raise RecordError(f"{root}: evaluation folder does not exist")
    files = sorted([*root.glob("*/test.jsonl"), *root.glob("*/dev.jsonl")])
    if not files:
        raise RecordError(f"{root}: no */test.jsonl or */dev.jsonl files (is it a prepared-data folder?)")
    return files


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise RecordError(f"{path}: input file does not exist")
    try:
        return list(read_jsonl(path))
    except UnicodeDecodeError as exc:  # binary or non-UTF-8 file: read_jsonl only names JSON errors
        raise RecordError(f"{path}: not a UTF-8 JSONL file ({exc.reason})") from exc


def read_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[Loaded]:
    """Each distinct file with its records; a missing or non-JSONL file raises :class:`RecordError`."""
    return [(p, _load(p)) for p in _unique_paths(paths)]


def _unique_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    # --eval and --eval-dir may name the same file; validating it twice would fake duplicate ids.
    seen: set[Path] = set()
    out = []
    for p in paths:
        path = Path(p)
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def normalize_sentence(text: str) -> str:
    """Leakage key: NFKC, case-folded, whitespace folded (punctuation kept: short sentences differ by it)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _scalar(value: Any) -> Any:
    """GX frames hold scalars only (its batch fingerprint hashes every cell); lists become JSON text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def short_value(value: Any) -> str:
    """A cell as an example value: at most _VALUE_CHARS characters, empty or padded strings quoted."""
    if value is None:
        return "<missing>"
    text = value if isinstance(value, str) else repr(value)
    if isinstance(value, str) and (not value.strip() or value != value.strip()):
        text = repr(value)  # make empty / whitespace-only values visible
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _record_type_errors(obj: dict[str, Any]) -> str | None:
    """Wrong types of present fields (absence is the *_present expectations' job)."""
    problems = []
    for key in ("id", "text", "dataset", "split"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            problems.append(f"{key} is {_type_name(obj[key])}, expected string")
    if obj.get("entities") is not None and not isinstance(obj["entities"], list):
        problems.append(f"entities is {_type_name(obj['entities'])}, expected list")
    schema = obj.get("schema")
    if schema is not None and not (isinstance(schema, list) and all(isinstance(s, str) for s in schema)):
        problems.append("schema is not a list of strings")
    if obj.get("cot") is not None and not isinstance(obj["cot"], str):
        problems.append(f"cot is {_type_name(obj['cot'])}, expected string")
    meta = obj.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            problems.append(f"meta is {_type_name(meta)}, expected object")
        elif "teacher" in meta and not (isinstance(meta["teacher"], str) and meta["teacher"].strip()):
            problems.append("meta.teacher is not a non-empty string")
    return "; ".join(problems) or None


def _entity_rows(obj: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
    entities = obj.get("entities")
    if not isinstance(entities, list):
        return []  # record_field_types / entities_present report it
    text = obj.get("text")
    schema = obj.get("schema")
    schema_set = set(schema) if isinstance(schema, list) and all(isinstance(s, str) for s in schema) else None
    rows = []
    for i, ent in enumerate(entities):
        row = {**base, "entity": i, "entity_errors": None, "offset_problem": None, "surface_problem": None,
               "label_problem": None}
        if not isinstance(ent, dict):
            row["entity_errors"] = f"entities[{i}] is {_type_name(ent)}, expected object"
            rows.append(row)
            continue
        start, end, label, surface = ent.get("start"), ent.get("end"), ent.get("label"), ent.get("text")
        problems = [f"{k} missing" for k in ("start", "end", "label", "text") if ent.get(k) is None]
        problems += [f"{k} is {_type_name(v)}, expected int" for k, v in (("start", start), ("end", end))
                     if v is not None and not _is_int(v)]
        problems += [f"{k} is {_type_name(v)}, expected string" for k, v in (("label", label), ("text", surface))
                     if v is not None and not isinstance(v, str)]
        row["entity_errors"] = "; ".join(problems) or None
        if _is_int(start) and _is_int(end) and isinstance(text, str):
            if not 0 <= start < end <= len(text):
                row["offset_problem"] = f"[{start}, {end}) outside text of length {len(text)}"
            elif isinstance(surface, str) and text[start:end] != surface:
                row["surface_problem"] = f"entity text {surface!r} != text[{start}:{end}] {text[start:end]!r}"
        if isinstance(label, str) and schema_set is not None and label not in schema_set:
            shown = ", ".join(sorted(schema_set)[:12]) + (", ..." if len(schema_set) > 12 else "")
            row["label_problem"] = f"label {label!r} not in schema [{shown}]"
        rows.append(row)
    return rows


def _display_file(path: Path) -> str:
    # <dataset>/<split>.jsonl is what identifies a prepared file; the full path is in statistics.
    return str(Path(path.parent.name) / path.name) if path.parent.name else path.name


def build_frames(train: list[Loaded], evals: list[Loaded]) -> dict[str, pd.DataFrame]:
    """records / entities / training frames (object dtype: no NaN coercion of ints or None)."""
    import pandas as pd

    eval_index: dict[str, str] = {}
    for path, objs in evals:
        for obj in objs:
            text = obj.get("text")
            if isinstance(text, str) and text.strip():
                eval_index.setdefault(normalize_sentence(text), f"{_scalar(obj.get('id'))} ({_display_file(path)})")

    def leak(text: Any) -> str | None:
        if not (isinstance(text, str) and text.strip()):
            return None
        ref = eval_index.get(normalize_sentence(text))
        return f"{short_value(text if len(text) <= 80 else text[:77] + '...')} also in {ref}" if ref else None

    records, entities, training = [], [], []
    for role, files in (("train", train), ("eval", evals)):
        for path, objs in files:
            shown = _display_file(path)
            for line, obj in enumerate(objs, 1):
                base = {"id": _scalar(obj.get("id")), "file": shown, "line": line}
                text = obj.get("text")
                records.append({
                    **base, "role": role,
                    **{k: _scalar(obj.get(k)) for k in REQUIRED_FIELDS if k != "id"},
                    "type_errors": _record_type_errors(obj),
                    "text_stripped": text.strip() if isinstance(text, str) else None,
                })
                entities.extend(_entity_rows(obj, base))
                if role != "train":
                    continue
                cot = obj.get("cot")
                cot_ok = isinstance(cot, str) and bool(cot.strip())
                training.append({
                    **base,
                    "dataset": _scalar(obj.get("dataset")),
                    "leaked_into": leak(text),
                    # A non-string cot counts as present here; record_field_types reports its type.
                    "cot_nonempty": None if cot is None or (isinstance(cot, str) and not cot.strip()) else _scalar(cot),
                    "cot_display": _scalar(cot),
                    "cot_str": cot if isinstance(cot, str) else None,
                    # Empty chains are cot_present's failure, not also a word-count one.
                    "cot_words": len(cot.split()) if cot_ok else None,
                })
    columns = {
        "records": ["file", "line", "role", *REQUIRED_FIELDS, "type_errors", "text_stripped"],
        "entities": ["id", "file", "line", "entity", "entity_errors", "offset_problem", "surface_problem",
                     "label_problem"],
        "training": ["id", "file", "line", "dataset", "leaked_into", "cot_nonempty", "cot_display", "cot_str",
                     "cot_words"],
    }
    rows = {"records": records, "entities": entities, "training": training}
    # Fixed columns even for empty frames: an expectation on a missing column is a GX error, not a check.
    return {name: pd.DataFrame(rows[name], columns=columns[name], dtype=object) for name in columns}
