"""``rner cot synthesize``: teacher -> structural checks -> optional judge -> accepted/rejected JSONL.

Resumable and crash-safe: every finished record is appended (and flushed) to ``accepted.jsonl``
or ``rejected.jsonl`` under its id, and the files are fsynced every second and at the end. A run
killed at any moment (SIGKILL included) and started again drops a torn last line, skips the ids
already written, and finishes with every input record present exactly once across the two files.
Rejected records keep the input record and every reason, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ..config import CoTConfig
from ..prompt import render_answer
from ..records import NERRecord, RecordError, read_jsonl, read_records, write_json
from .client import ChatClient, ChatResult, EndpointError
from .offline import OFFLINE_TEACHER_NAME, offline_chain
from .prompts import judge_prompt, parse_judge_score, teacher_prompt
from .verify import verify

ACCEPTED, REJECTED, STATS = "accepted.jsonl", "rejected.jsonl", "stats.json"


class Teacher(Protocol):
    name: str

    async def generate(self, record: NERRecord) -> ChatResult: ...


class OfflineTeacher:
    """Gold-grounded chains with no network (see :mod:`reasoning_ner.cot.offline`)."""

    def __init__(self, chain_style: str = "full"):
        self.chain_style = chain_style
        self.name = f"{OFFLINE_TEACHER_NAME}:{chain_style}"

    async def generate(self, record: NERRecord) -> ChatResult:
        chain = offline_chain(record, self.chain_style)
        answer = render_answer(record.grouped_spans(), None)
        return ChatResult(content=answer, reasoning=chain, raw=f"<think>\n{chain}\n</think>\n{answer}", model=self.name)


class EndpointTeacher:
    """A reasoning LLM behind an OpenAI-compatible endpoint (e.g. vLLM serving DeepSeek-R1)."""

    def __init__(self, client: ChatClient, mode: str, temperature: float, max_tokens: int):
        self.client, self.mode, self.temperature, self.max_tokens = client, mode, temperature, max_tokens
        self.name = f"openai:{client.model}"

    async def generate(self, record: NERRecord) -> ChatResult:
        gold = record.grouped_spans() if self.mode == "explain" else None
        prompt = teacher_prompt(record.text, record.schema, self.mode, gold)
        return await self.client.chat([{"role": "user", "content": prompt}], self.temperature, self.max_tokens)


class Judge:
    def __init__(self, client: ChatClient, threshold: float, max_tokens: int = 2048):
        self.client, self.threshold, self.max_tokens = client, threshold, max_tokens

    async def score(self, record: NERRecord, chain: str, answer: str) -> tuple[float | None, ChatResult]:
        prompt = judge_prompt(record.text, record.schema, chain, answer)
        result = await self.client.chat([{"role": "user", "content": prompt}], 0.0, self.max_tokens)
        return parse_judge_score(result.content or result.raw), result


class ResultStore:
    """Append-only accepted/rejected files keyed by record id."""

    FSYNC_EVERY_S = 1.0

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = {"accepted": out_dir / ACCEPTED, "rejected": out_dir / REJECTED}
        self.done: set[str] = set()
        for kind, path in self.paths.items():
            self.done |= self._recover(path, retry_failed=kind == "rejected")
        self._files = {k: open(p, "a", encoding="utf-8") for k, p in self.paths.items()}
        self._last_sync = time.monotonic()

    @staticmethod
    def _recover(path: Path, retry_failed: bool = False) -> set[str]:
        """Ids already written; a torn last line (killed mid-write) is cut off. With ``retry_failed``
        the records whose teacher call failed for good are taken out of the file, so this run asks again."""
        if not path.exists():
            return set()
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut != len(data):
            with open(path, "r+b") as fh:
                fh.truncate(cut)
        ids, kept, retried = set(), [], 0
        for line in data[:cut].splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if retry_failed and row.get("reasons") == ["teacher_failed"]:
                retried += 1
                continue
            ids.add(row["id"])
            kept.append(line)
        if retried:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))
            os.replace(tmp, path)
        return ids

    def append(self, kind: str, row: dict[str, Any]) -> None:
        fh = self._files[kind]
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()  # in the OS page cache: survives SIGKILL of this process
        self.done.add(row["id"])
        if time.monotonic() - self._last_sync > self.FSYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        for fh in self._files.values():
            os.fsync(fh.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        self.sync()
        for fh in self._files.values():
            fh.close()


def eval_sentences(eval_files: Iterable[Path]) -> set[str]:
    """Normalized sentences of evaluation splits (the leakage key the validation gate uses)."""
    from ..validation import normalize_sentence

    return {normalize_sentence(r["text"]) for f in eval_files for r in read_jsonl(f)}


def load_inputs(
    files: Iterable[Path],
    zero_shot: Iterable[str],
    max_per_dataset: int | None = None,
    exclude_sentences: set[str] | None = None,
    dropped: Counter[str] | None = None,
) -> list[NERRecord]:
    """Training records from canonical JSONL; zero-shot datasets and duplicate ids are refused.

    Records whose sentence also occurs in an evaluation split (``exclude_sentences``) are dropped
    before the cap and counted in ``dropped`` per dataset: CoNLL-2003 train repeats hundreds of
    its dev/test lines ("REUTER", scores, datelines), which would otherwise leak.
    """
    from ..validation import normalize_sentence

    zero_shot = set(zero_shot)
    records: list[NERRecord] = []
    seen: set[str] = set()
    per_dataset: Counter[str] = Counter()
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file {path} does not exist")
        for record in read_records(path):
            if record.dataset in zero_shot:
                raise RecordError(
                    f"{path}: record {record.id} is from zero-shot evaluation dataset {record.dataset!r}; "
                    "it may never enter training data"
                )
            if record.id in seen:
                raise RecordError(f"{path}: duplicate record id {record.id!r}")
            seen.add(record.id)
            if exclude_sentences and normalize_sentence(record.text) in exclude_sentences:
                if dropped is not None:
                    dropped[record.dataset] += 1
                continue
            if max_per_dataset is not None and per_dataset[record.dataset] >= max_per_dataset:
                continue
            per_dataset[record.dataset] += 1
            records.append(record)
    return records


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Synthesizer:
    def __init__(self, teacher: Teacher, cfg: CoTConfig, judge: Judge | None = None):
        self.teacher, self.cfg, self.judge = teacher, cfg, judge

    async def process(self, record: NERRecord) -> tuple[str, dict[str, Any]]:
        """One record -> ("accepted" | "rejected", output row)."""
        teacher_meta: dict[str, Any] = {"teacher": self.teacher.name, "mode": self.cfg.mode}
        try:
            result = await self.teacher.generate(record)
        except EndpointError as exc:
            return "rejected", self._rejected(record, ["teacher_failed"], {"error": [str(exc)]}, teacher_meta, "")
        teacher_meta.update(
            teacher_model=result.model,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            latency_s=round(result.latency_s, 4),
            attempts=result.attempts,
        )
        chain = result.reasoning
        verdict = verify(
            record, chain, result.content, self.cfg.mode, self.cfg.min_gold_f1, self.cfg.min_chain_words, self.cfg.max_chain_words
        )
        if result.finish_reason == "length":
            verdict.reasons.append("truncated_output")
        if verdict.accepted and self.judge is not None:
            try:
                score, judged = await self.judge.score(record, chain, result.content)
            except EndpointError as exc:
                verdict.reasons.append("judge_failed")
                verdict.details["judge_error"] = [str(exc)]
            else:
                teacher_meta["judge_score"] = score
                teacher_meta["judge_tokens"] = judged.prompt_tokens + judged.completion_tokens
                if score is None:
                    verdict.reasons.append("judge_unparseable")
                elif score < self.judge.threshold:
                    verdict.reasons.append("judge_below_threshold")
        if verdict.gold_f1 is not None:
            teacher_meta["gold_f1"] = round(verdict.gold_f1, 4)
        if not verdict.accepted:
            return "rejected", self._rejected(record, verdict.reasons, verdict.details, teacher_meta, result.raw)
        out = NERRecord(
            id=record.id,
            text=record.text,
            entities=verdict.entities,
            schema=record.schema,
            dataset=record.dataset,
            split=record.split,
            source_format=record.source_format,
            cot=chain.strip(),
            meta={**record.meta, **teacher_meta, "gold_entities": len(record.entities)},
        )
        return "accepted", out.to_dict()

    @staticmethod
    def _rejected(record: NERRecord, reasons: list[str], details: dict, meta: dict, raw: str) -> dict[str, Any]:
        return {"id": record.id, "dataset": record.dataset, "reasons": reasons, "details": details, **meta,
                "raw": raw[:4000], "record": record.to_dict()}

    async def run(self, records: list[NERRecord], store: ResultStore, progress: bool = True) -> dict[str, Any]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        todo = [r for r in records if r.id not in store.done]
        queue: asyncio.Queue[NERRecord] = asyncio.Queue()
        for r in todo:
            queue.put_nowait(r)
        counts: Counter[str] = Counter()
        latencies: list[float] = []
        started = time.perf_counter()

        with Progress(
            TextColumn("[bold]synthesize"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            TimeElapsedColumn(), disable=not progress,
        ) as bar:
            task = bar.add_task("", total=len(todo))

            async def worker() -> None:
                while True:
                    try:
                        record = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    kind, row = await self.process(record)
                    store.append(kind, row)
                    counts[kind] += 1
                    if "latency_s" in row.get("meta", row):
                        latencies.append(row.get("meta", row)["latency_s"])
                    done = counts["accepted"] + counts["rejected"]
                    bar.update(task, advance=1, description=f"accept rate {counts['accepted'] / done:.1%}")

            workers = [asyncio.create_task(worker()) for _ in range(min(self.cfg.concurrency, max(1, len(todo))))]
            try:
                await asyncio.gather(*workers)
            finally:
                for w in workers:
                    w.cancel()
        elapsed = time.perf_counter() - started
        processed = counts["accepted"] + counts["rejected"]
        return {
            "processed_this_run": processed,
            "skipped_already_done": len(records) - len(todo),
            "seconds": round(elapsed, 3),
            "throughput_rps": round(processed / elapsed, 2) if elapsed > 0 else 0.0,
            "latency_s": {q: round(_percentile(latencies, p), 4) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
        }


def summarize_outputs(out_dir: Path) -> dict[str, Any]:
    """Totals over everything in the output files (so stats stay right across resumed runs)."""
    reasons: Counter[str] = Counter()
    by_dataset: dict[str, Counter[str]] = {}
    tokens = Counter()
    accepted = rejected = 0
    for kind in ("accepted", "rejected"):
        path = out_dir / (ACCEPTED if kind == "accepted" else REJECTED)
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                row = json.loads(line)
                meta = row.get("meta", row)
                by_dataset.setdefault(row.get("dataset", "?"), Counter())[kind] += 1
                tokens["prompt"] += int(meta.get("prompt_tokens") or 0)
                tokens["completion"] += int(meta.get("completion_tokens") or 0)
                if kind == "accepted":
                    accepted += 1
                else:
                    rejected += 1
                    reasons.update(row.get("reasons", []))
    total = accepted + rejected
    return {
        "records": total,
        "accepted": accepted,
        "rejected": rejected,
        "accept_rate": accepted / total if total else 0.0,
        "rejections_by_reason": dict(reasons.most_common()),
        "reject_rate_by_reason": {k: v / total for k, v in reasons.most_common()} if total else {},
        "by_dataset": {k: dict(v) for k, v in sorted(by_dataset.items())},
        "tokens": dict(tokens),
    }


def _client(url: str, model: str, key_env: str, cfg: CoTConfig) -> ChatClient:
    return ChatClient.from_env(url, model, key_env, concurrency=cfg.concurrency, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries)


async def _run(records: list[NERRecord], out_dir: Path, cfg: CoTConfig, progress: bool) -> dict[str, Any]:
    store = ResultStore(out_dir)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if cfg.teacher == "offline":
                teacher: Teacher = OfflineTeacher(cfg.chain_style)
            else:
                client = await stack.enter_async_context(_client(cfg.teacher_url or "", cfg.teacher_model, cfg.teacher_api_key_env, cfg))
                teacher = EndpointTeacher(client, cfg.mode, cfg.temperature, cfg.max_tokens)
            judge = None
            if cfg.judge_url:
                judge_client = await stack.enter_async_context(_client(cfg.judge_url, cfg.judge_model, cfg.judge_api_key_env, cfg))
                judge = Judge(judge_client, cfg.judge_threshold)
            return await Synthesizer(teacher, cfg, judge).run(records, store, progress)
    finally:
        store.close()


def synthesize(
    input_files: list[Path],
    out_dir: Path,
    cfg: CoTConfig,
    zero_shot: Iterable[str],
    progress: bool = True,
    eval_files: Iterable[Path] = (),
) -> dict[str, Any]:
    """Run (or resume) a synthesis; returns and writes ``stats.json``.

    ``eval_files``: evaluation splits whose sentences must not enter training data.
    """
    if cfg.teacher == "openai" and not cfg.teacher_url:
        raise ValueError("cot.teacher is 'openai' but no teacher URL is set (--teacher-url or cot.teacher_url)")
    dropped: Counter[str] = Counter()
    records = load_inputs(input_files, zero_shot, cfg.max_records_per_dataset, eval_sentences(eval_files), dropped)
    run_stats = asyncio.run(_run(records, out_dir, cfg, progress))
    stats = {
        **summarize_outputs(out_dir),
        "inputs": [str(p) for p in input_files],
        "input_records": len(records),
        "dropped_eval_overlap": dict(dropped),
        "teacher": cfg.teacher if cfg.teacher == "offline" else f"openai:{cfg.teacher_model}@{cfg.teacher_url}",
        "chain_style": cfg.chain_style if cfg.teacher == "offline" else None,
        "mode": cfg.mode,
        "judge": f"{cfg.judge_model}@{cfg.judge_url} (threshold {cfg.judge_threshold})" if cfg.judge_url else None,
        "last_run": run_stats,
    }
    write_json(out_dir / STATS, stats)
    return stats
