"""The paper's own SFT data: NER-CoT (DeepSeek-R1 chains over Pile-NER), imported instead of synthesized.

``rner data import-ner-cot`` (and ``rner cot synthesize`` with ``cot.sft_data: ner-cot``, which the
DVC stage and the pipeline's synthesize step run) reads NER-CoT-format records,
``{guid?, sentence, schema, cot, entities: [{text, label}]}`` as a JSON list or JSONL, from a local
file or folder (a ``dvc import``-ed path is one), or any fsspec URL (``s3://bucket/key``; the S3
endpoint comes from ``AWS_ENDPOINT_URL`` as for DVC). Each chain goes through the structural checks
a teacher's chain goes through (:func:`reasoning_ner.cot.verify.verify`: chain length, answer labels
within the record's schema, spans in the sentence, every entity mentioned in the chain), and
sentences of any evaluation split are dropped. The output is the layout ``rner cot synthesize``
writes (``accepted.jsonl``, ``rejected.jsonl`` with a reason per record, ``stats.json``), so the
validation gate (kind ``cot``) and SFT read it unchanged. No NER-CoT text is in this repository.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..config import Config, CoTConfig
from ..data.formats import FormatError, RecordContext, ner_cot_row_to_record
from ..labels import map_label
from ..records import write_json
from .synthesize import ACCEPTED, REJECTED, STATS, eval_sentences, summarize_outputs, synthesize
from .verify import verify

DATASET = "ner_cot"
SOURCE_FORMAT = "ner-cot"


def _open_text(location: str) -> str:
    import fsspec

    kwargs: dict[str, Any] = {}
    if location.startswith("s3://"):
        if os.environ.get("AWS_ENDPOINT_URL"):
            kwargs["client_kwargs"] = {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}
    with fsspec.open(location, "r", encoding="utf-8", **kwargs) as fh:
        return fh.read()


def source_files(source: str) -> list[str]:
    """The files of ``source``: itself, or a local folder's ``*.json``/``*.jsonl`` (sorted)."""
    if "://" not in source:
        path = Path(source)
        if path.is_dir():
            files = sorted(str(p) for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
            if not files:
                raise FileNotFoundError(f"{source}: no .json or .jsonl files with NER-CoT records")
            return files
        if not path.is_file():
            raise FileNotFoundError(f"NER-CoT source {source} does not exist")
    return [source]


def read_rows(location: str) -> Iterator[tuple[str, Any]]:
    """(where, row) for every record of one file; a line that is not JSON comes back as (where, error)."""
    text = _open_text(location)
    if location.endswith(".jsonl") or not text.lstrip().startswith("["):
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield f"{location}:{lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{location}:{lineno}", FormatError(f"not valid JSON ({exc.msg})")
        return
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{location}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(rows, list):
        raise FormatError(f"{location}: expected a JSON list of NER-CoT records")
    for index, row in enumerate(rows):
        yield f"{location}[{index}]", row


def check_row(row: Any, index: int, where: str, cfg: CoTConfig) -> tuple[str, dict[str, Any]]:
    """One NER-CoT row -> ("accepted", canonical record) or ("rejected", row with reasons)."""
    ctx = RecordContext(DATASET, "train", None, None, False, SOURCE_FORMAT)

    def rejected(reasons: list[str], details: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rid = ctx.make_id(str(row["guid"])) if isinstance(row, dict) and row.get("guid") is not None else ctx.make_id(index)
        return "rejected", {"id": rid, "dataset": DATASET, "reasons": reasons, "details": details, "source": where,
                            "record": row if isinstance(row, dict) else repr(row)[:2000]}

    if isinstance(row, Exception):
        return rejected(["malformed_record"], {"error": [str(row)]})
    if not isinstance(row, dict) or not isinstance(row.get("sentence"), str) or not isinstance(row.get("entities", []), list):
        return rejected(["malformed_record"], {"error": ["needs sentence (text), schema (list), cot (text), entities (list)"]})
    schema_raw = row.get("schema") or []
    if not isinstance(schema_raw, list) or not schema_raw:
        return rejected(["no_schema"], {})
    try:
        record = ner_cot_row_to_record(row, ctx, index, where)
    except (FormatError, KeyError, TypeError, ValueError) as exc:
        return rejected(["malformed_record"], {"error": [str(exc)]})
    # ner_cot_row_to_record widens the schema by the answer's labels; the check needs the file's own.
    record.schema = sorted({map_label(s) for s in schema_raw} - {""})
    chain = row.get("cot")
    if not isinstance(chain, str) or not chain.strip():
        return rejected(["chain_missing"], {})
    answer: dict[str, list[str]] = {}
    for e in row.get("entities") or []:
        answer.setdefault(map_label(str(e.get("label", ""))), []).append(str(e.get("text", "")))
    verdict = verify(record, chain, json.dumps({"entities": answer}, ensure_ascii=False), "explain",
                     cfg.min_gold_f1, cfg.min_chain_words, cfg.max_chain_words)
    if not verdict.accepted:
        return rejected(verdict.reasons, verdict.details)
    record.entities = verdict.entities
    record.cot = chain.strip()
    record.meta = {"source": where}
    return "accepted", record.to_dict()


def import_ner_cot(
    source: str,
    out_dir: Path,
    cfg: CoTConfig,
    eval_files: Iterable[Path] = (),
    progress: bool = True,
) -> dict[str, Any]:
    """Import NER-CoT records into ``out_dir`` (accepted/rejected/stats, as synthesis writes them)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    files = source_files(source)
    held_out = eval_sentences(eval_files)
    from ..validation import normalize_sentence

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    with open(out_dir / ACCEPTED, "w", encoding="utf-8") as acc, open(out_dir / REJECTED, "w", encoding="utf-8") as rej, \
            Progress(TextColumn("[bold]import NER-CoT"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     disable=not progress) as bar:
        task = bar.add_task("", total=None)
        index = 0
        for location in files:
            for where, row in read_rows(location):
                bar.advance(task)
                if isinstance(row, dict) and isinstance(row.get("sentence"), str) and normalize_sentence(row["sentence"]) in held_out:
                    dropped[DATASET] += 1
                    continue
                kind, out = check_row(row, index, where, cfg)
                index += 1
                if kind == "accepted" and out["id"] in seen:
                    kind, out = "rejected", {"id": out["id"], "dataset": DATASET, "reasons": ["duplicate_id"], "details": {},
                                             "source": where, "record": row}
                seen.add(out["id"])
                (acc if kind == "accepted" else rej).write(json.dumps(out, ensure_ascii=False) + "\n")
    seconds = time.perf_counter() - started
    stats = {**summarize_outputs(out_dir), "inputs": files, "input_records": index + sum(dropped.values()),
             "dropped_eval_overlap": dict(dropped), "teacher": f"NER-CoT import ({source})", "mode": "import",
             "last_run": {"processed_this_run": index, "seconds": round(seconds, 3),
                          "throughput_rps": round(index / seconds, 2) if seconds > 0 else 0.0}}
    write_json(out_dir / STATS, stats)
    return stats


def build_cot_data(cfg: Config, inputs: list[Path], out_dir: Path, eval_files: Iterable[Path] = (),
                   progress: bool = True) -> dict[str, Any]:
    """Stage 1's output in ``out_dir``, as ``cot.sft_data`` says: synthesized by the teacher, or NER-CoT imported."""
    if cfg.cot.sft_data == "ner-cot":
        assert cfg.cot.ner_cot_uri  # the config refuses ner-cot without it
        return import_ner_cot(cfg.cot.ner_cot_uri, out_dir, cfg.cot, eval_files, progress)
    return synthesize(inputs, out_dir, cfg.cot, cfg.data.zero_shot_datasets, progress, eval_files)
