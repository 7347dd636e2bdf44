"""``rner cot``: stage 1, reasoning chains from a teacher LLM, and the stub teacher that stands in for it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import err_console, fail, get_config, stdout

cot_app = typer.Typer(help="Stage 1: synthesize reasoning chains with a teacher LLM.", no_args_is_help=True)


@cot_app.command("synthesize")
def cot_synthesize(
    ctx: typer.Context,
    input: Annotated[
        Optional[list[Path]],
        typer.Option("--input", "-i", help="Canonical training JSONL (repeatable; default: the train split of each "
                     "data.train_datasets under data.prepared_dir)."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: config cot.out_dir).")] = None,
    teacher_url: Annotated[
        Optional[str], typer.Option(help="OpenAI-compatible base URL (e.g. http://vllm:8000/v1); unset = offline teacher.")
    ] = None,
    teacher_model: Annotated[Optional[str], typer.Option(help="Model name sent to the teacher.")] = None,
    judge_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL of the judge; unset = no judge.")] = None,
    mode: Annotated[Optional[str], typer.Option(help="reannotate (paper) or explain.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Concurrent teacher requests.")] = None,
    eval_dir: Annotated[
        Optional[Path], typer.Option(help="Prepared data whose */test.jsonl and */dev.jsonl sentences are dropped from the inputs.")
    ] = None,
) -> None:
    """Teacher -> structural checks -> judge; writes accepted.jsonl, rejected.jsonl and stats.json.

    With cot.sft_data: ner-cot the chains are the paper's NER-CoT records read from cot.ner_cot_uri
    instead (the same checks; `rner data import-ner-cot` does it by hand).

    Resumable: run the same command again after an interruption and it finishes the rest.
    API keys come from the environment (cot.teacher_api_key_env / cot.judge_api_key_env).
    """
    from ..cot.ner_cot import build_cot_data
    from ..data.formats import FormatError
    from ..records import RecordError

    extra = []
    if teacher_url:
        extra += ["cot.teacher=openai", f"cot.teacher_url={teacher_url}"]
    for key, value in (("teacher_model", teacher_model), ("judge_url", judge_url), ("mode", mode), ("concurrency", concurrency)):
        if value is not None:
            extra.append(f"cot.{key}={value}")
    cfg = get_config(ctx, extra)
    out_dir = out or Path(cfg.cot.out_dir)
    if not input:
        input = [Path(cfg.data.prepared_dir) / name / "train.jsonl" for name in cfg.data.train_datasets]
    try:
        from ..validation import find_eval_files

        eval_files = find_eval_files(eval_dir) if eval_dir is not None else []
        stats = build_cot_data(cfg, input, out_dir, eval_files, sys.stderr.isatty())
    except (RecordError, FileNotFoundError, ValueError, FormatError, OSError) as exc:
        raise fail(str(exc)) from exc
    reasons = ", ".join(f"{k} {v}" for k, v in stats["rejections_by_reason"].items()) or "none"
    failed = stats["rejections_by_reason"].get("teacher_failed", 0)
    if stats["accepted"] == 0 and failed and failed == stats["rejected"]:
        # Single failures are part of a run (retried on the next one); all of them is a teacher that is not there.
        raise fail(f"every teacher request failed ({failed} records; {cfg.cot.teacher_url}): "
                   f"{_first_error(out_dir / 'rejected.jsonl')}. Nothing accepted; run again once the teacher answers "
                   "(the finished records are kept)", code=1)
    if stats["dropped_eval_overlap"]:
        stdout.print(f"dropped (sentence also in an evaluation split): {stats['dropped_eval_overlap']}")
    stdout.print(
        f"{stats['accepted']} accepted, {stats['rejected']} rejected ({stats['accept_rate']:.1%} accepted; "
        f"rejections: {reasons}) -> {out_dir}; {stats['last_run']['throughput_rps']} records/s this run"
    )


def _first_error(rejected: Path) -> str:
    from ..records import read_jsonl

    for row in read_jsonl(rejected):
        errors = row.get("details", {}).get("error")
        if errors:
            return str(errors[0])[:300]
    return "no error recorded"


@cot_app.command("stub-teacher")
def cot_stub_teacher(
    gold: Annotated[list[Path], typer.Option(help="Canonical JSONL whose gold annotations the stub answers with.")],
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    latency_ms: Annotated[float, typer.Option(help="Added latency per request.")] = 0.0,
    faults: Annotated[str, typer.Option(help="Fault rates, e.g. rate_limit=0.1,truncated=0.05.")] = "",
) -> None:
    """Serve a stub OpenAI-compatible teacher/judge (stands in for vLLM in demos and tests)."""
    from ..cot.stub_teacher import FaultPlan, parse_faults, serve_stub

    try:
        plan = FaultPlan(latency_s=latency_ms / 1000, rates=parse_faults(faults))
    except ValueError as exc:
        raise fail(str(exc)) from exc
    err_console.print(f"stub teacher on http://{host}:{port}/v1 (Ctrl-C to stop)")
    serve_stub(gold, host, port, plan)
