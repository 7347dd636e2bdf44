"""Curate (``rner data harvest``): a window of logged traffic becomes a validated training set.

:func:`harvest` is the one entry point (the CLI, the ``harvest_traffic`` component and the refresh
pipeline call it): read the window (:mod:`.harvest_read`), drop every sentence of an evaluation
split, sample by uncertainty and label (:mod:`.harvest_sample`), re-annotate with the teacher (+
judge) through stage 1's :class:`~reasoning_ner.cot.synthesize.Synthesizer`, keep a held-out
slice, run the validation gate (kind ``cot``) and write the lineage.

Traffic has no gold annotation, so the teacher always works in ``reannotate`` mode (sentence and
schema only; ``explain`` needs gold) and the gold-agreement check cannot apply: ``min_gold_f1`` is
0 and no ``gold_f1`` is recorded. Every other check (answer parses, labels in the schema, spans in
the sentence, entities in the chain, chain length, the judge) applies unchanged. The served model's
answer is not gold either; its F1 against the teacher is kept as ``meta.served_f1`` for drift
monitoring only. The offline teacher writes chains from gold and so cannot label traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import tempfile
from pathlib import Path
from typing import Any

from ..config import Config, CoTConfig
from ..records import NERRecord, read_jsonl, write_json, write_jsonl
from .harvest_read import Sentence, evaluation_files, read_window, reference_sentence_files
from .harvest_sample import select, served_pairs

SUMMARY, LINEAGE, HELDOUT = "harvest.json", "lineage.json", "heldout.jsonl"
DATASET = "traffic"


class HarvestError(ValueError):
    """A harvest that cannot run or whose result must not be used; the message says why."""


class EmptyWindowError(HarvestError):
    """The window holds no usable logged record (or none left after dropping evaluation sentences)."""


class GateFailedError(HarvestError):
    """The harvested records failed the validation gate (kind ``cot``), as stage 1's output would."""


def window(cfg: Config, since: str | None, until: str | None) -> tuple[dt.date, dt.date]:
    """The window named by two optional YYYY-MM-DD strings: ``until`` defaults to today (UTC), ``since``
    to ``flywheel.harvest_window_days`` days ending at ``until``."""
    try:
        last = dt.date.fromisoformat(until) if until else dt.datetime.now(dt.timezone.utc).date()
        first = dt.date.fromisoformat(since) if since else last - dt.timedelta(days=cfg.flywheel.harvest_window_days - 1)
    except ValueError as exc:
        raise HarvestError(f"window dates must be YYYY-MM-DD ({exc})") from exc
    if last < first:
        raise HarvestError(f"the window ends ({last}) before it starts ({first})")
    return first, last


def teacher_config(cfg: Config) -> CoTConfig:
    """Stage 1's settings as traffic needs them; refuses a teacher that cannot label unannotated text."""
    cot = cfg.cot
    if cot.teacher == "offline":
        raise HarvestError("cot.teacher is 'offline': the offline teacher writes chains from gold annotations, and "
                           "logged traffic has none; set cot.teacher=openai and cot.teacher_url (--teacher-url)")
    if not cot.teacher_url:
        raise HarvestError("cot.teacher is 'openai' but no teacher URL is set (--teacher-url or cot.teacher_url)")
    return CoTConfig.model_validate({**cot.model_dump(), "mode": "reannotate", "min_gold_f1": 0.0})


def _as_record(sentence: Sentence, flags: list[str]) -> NERRecord:
    latest = sentence.samples[-1]
    return NERRecord(
        id=sentence.id, text=sentence.text, entities=[], schema=sentence.labels, dataset=DATASET, split="train",
        source_format="traffic",
        meta={"logged_ids": [str(s.get("id", "")) for s in sentence.samples][:20], "logged_samples": len(sentence.samples),
              "uncertainty": flags, "model_version": latest.get("model_version", ""),
              "served_entities": served_pairs(latest), "logged_at": latest.get("time", "")},
    )


def _strip_gold(row: dict[str, Any]) -> dict[str, Any]:
    """Remove what stage 1 records about gold: traffic has none (the record's entities are empty)."""
    for holder in (row, row.get("meta", {}), row.get("record", {}).get("meta", {})):
        holder.pop("gold_f1", None)
        holder.pop("gold_entities", None)
    return row


async def _annotate(records: list[NERRecord], out_dir: Path, cot: CoTConfig, progress: bool) -> dict[str, Any]:
    from ..cot.client import ChatClient
    from ..cot.synthesize import EndpointTeacher, Judge, ResultStore, Synthesizer
    from ..cot.verify import gold_agreement

    class TrafficSynthesizer(Synthesizer):
        async def process(self, record: NERRecord) -> tuple[str, dict[str, Any]]:
            kind, row = await super().process(record)
            if kind == "accepted":
                teacher = [(e["text"], e["label"]) for e in row["entities"]]
                row["meta"]["served_f1"] = round(gold_agreement(record.meta["served_entities"], teacher), 4)
            return kind, _strip_gold(row)

    def client(url: str, model: str, key_env: str) -> ChatClient:
        return ChatClient.from_env(url, model, key_env, concurrency=cot.concurrency, timeout_s=cot.timeout_s,
                                   max_retries=cot.max_retries)

    store = ResultStore(out_dir)
    try:
        async with contextlib.AsyncExitStack() as stack:
            teacher_client = await stack.enter_async_context(client(cot.teacher_url or "", cot.teacher_model, cot.teacher_api_key_env))
            teacher = EndpointTeacher(teacher_client, cot.mode, cot.temperature, cot.max_tokens)
            judge = None
            if cot.judge_url:
                judge_client = await stack.enter_async_context(client(cot.judge_url, cot.judge_model, cot.judge_api_key_env))
                judge = Judge(judge_client, cot.judge_threshold)
            return await TrafficSynthesizer(teacher, cot, judge).run(records, store, progress)
    finally:
        store.close()


def split_heldout(out_dir: Path, fraction: float, seed: int) -> int:
    """Move a seeded ``fraction`` of the accepted records to heldout.jsonl (canonical NER, no chain)."""
    from ..cot.synthesize import ACCEPTED

    accepted = list(read_jsonl(out_dir / ACCEPTED)) if (out_dir / ACCEPTED).exists() else []
    ids = sorted(row["id"] for row in accepted)
    held = set(random.Random(seed).sample(ids, round(len(ids) * fraction))) if ids else set()
    heldout = []
    for row in accepted:
        if row["id"] in held:
            record = NERRecord.from_dict(row)
            heldout.append(NERRecord(record.id, record.text, record.entities, record.schema, DATASET, "test",
                                     "traffic", meta={"teacher": record.meta.get("teacher"), "uncertainty": record.meta.get("uncertainty", [])}))
    write_jsonl(out_dir / HELDOUT, heldout)
    write_jsonl(out_dir / ACCEPTED, [row for row in accepted if row["id"] not in held])
    return len(heldout)


def _gate(cfg: Config, out_dir: Path, eval_files: list[Path]) -> dict[str, Any]:
    from ..cot.synthesize import ACCEPTED
    from ..validation import format_report, validate_dataset

    report = validate_dataset([out_dir / ACCEPTED], eval_files, "cot", cfg.data.zero_shot_datasets, out_dir / "validation",
                              cfg.cot.min_chain_words, cfg.cot.max_chain_words)
    return {"success": report.success, "failed": report.failed_names, "report": format_report(report)}


def harvest(cfg: Config, *, since: dt.date, until: dt.date, out_dir: Path, progress: bool = False) -> dict[str, Any]:
    """Logged traffic of ``since``..``until`` (both included) -> a validated CoT training set in ``out_dir``.

    Writes stage 1's layout (accepted.jsonl, rejected.jsonl, stats.json, so SFT reads it unchanged),
    heldout.jsonl, lineage.json, validation/ and the returned summary as harvest.json. Raises
    :class:`HarvestError` for an unusable teacher or a finished harvest already in ``out_dir``,
    :class:`EmptyWindowError` when nothing usable is left, :class:`GateFailedError` when the gate fails.
    """
    from ..cot.synthesize import STATS, eval_sentences, summarize_outputs
    from ..validation_frames import normalize_sentence

    cot = teacher_config(cfg)
    fw = cfg.flywheel
    out_dir = Path(out_dir)
    if (out_dir / SUMMARY).exists():
        raise HarvestError(f"{out_dir} already holds a finished harvest ({SUMMARY}); choose a new --out folder")
    logged = read_window(fw.log_root, since, until, cfg.serve.max_text_chars, frozenset(fw.opt_out_labels), progress)
    where = f"{fw.log_root} {since}..{until}"
    if not logged.sentences:
        skipped = ", ".join(f"{k} {v}" for k, v in logged.skipped.most_common()) or "none"
        raise EmptyWindowError(f"no usable logged records in {where}: {len(logged.parts)} part file(s), "
                               f"{logged.lines} line(s), skipped: {skipped}")
    with tempfile.TemporaryDirectory(prefix="rner-harvest-eval-") as scratch:
        eval_files, eval_source = evaluation_files(cfg.data, Path(scratch))
        held_out = eval_sentences([*eval_files, *reference_sentence_files(cfg.data)])
        fresh = [s for s in logged.sentences if normalize_sentence(s.text) not in held_out]
        if not fresh:
            raise EmptyWindowError(f"all {len(logged.sentences)} distinct sentence(s) of {where} occur in evaluation splits")
        chosen, sampling = select(fresh, fw.harvest_budget, fw.harvest_uncertain_share, fw.harvest_min_agreement, fw.harvest_seed)
        run = asyncio.run(_annotate([_as_record(s, flags) for s, flags in chosen], out_dir, cot, progress))
        n_heldout = split_heldout(out_dir, fw.harvest_heldout_fraction, fw.harvest_seed)
        stats = {**summarize_outputs(out_dir), "teacher": f"openai:{cot.teacher_model}@{cot.teacher_url}", "mode": cot.mode,
                 "judge": f"{cot.judge_model}@{cot.judge_url} (threshold {cot.judge_threshold})" if cot.judge_url else None,
                 "last_run": run}
        write_json(out_dir / STATS, stats)
        gate = _gate(cfg, out_dir, eval_files)
    counts = {"part_files": len(logged.parts), "lines": logged.lines, "records": logged.records,
              "skipped": dict(logged.skipped.most_common()), "distinct_sentences": len(logged.sentences),
              "dropped_eval_sentences": len(logged.sentences) - len(fresh), **sampling,
              "accepted": stats["accepted"], "rejected": stats["rejected"], "heldout": n_heldout}
    lineage = {"log_root": fw.log_root, "window": {"since": since.isoformat(), "until": until.isoformat()},
               "parts": logged.parts, "counts": counts, "evaluation_data": eval_source, "teacher": stats["teacher"],
               "judge": stats["judge"], "settings": {k: v for k, v in fw.model_dump().items() if k.startswith("harvest_")},
               "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    write_json(out_dir / LINEAGE, lineage)
    summary = {**counts, "window": lineage["window"], "log_root": fw.log_root, "out_dir": str(out_dir),
               "accept_rate": round((stats["accepted"] + n_heldout) / max(1, stats["records"] + n_heldout), 4),
               "rejections_by_reason": stats["rejections_by_reason"],
               "gate": {"success": gate["success"], "failed": gate["failed"]}}
    write_json(out_dir / SUMMARY, summary)
    if not gate["success"]:
        raise GateFailedError(f"the harvested records failed the validation gate:\n{gate['report']}")
    return summary
