"""``rner eval`` (score predictions, evaluate a model) and ``rner promote`` (the gate that acts on the report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import fail, get_config, stdout

eval_app = typer.Typer(help="Evaluate predictions and models.", no_args_is_help=True)


@eval_app.command("score")
def eval_score(
    gold: Annotated[Path, typer.Option(help="Gold canonical JSONL.")],
    pred: Annotated[Path, typer.Option(help="Predictions JSONL (canonical records or {id, output}).")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the JSON report here.")] = None,
    keep_invalid_labels: Annotated[bool, typer.Option(help="Score misc/else/other labels too.")] = False,
) -> None:
    """Score predictions: paper-parity string-set F1 and strict offset F1, per dataset and label."""
    from ..records import RecordError, write_json
    from ..scoring import score_files

    for p in (gold, pred):
        if not p.is_file():
            raise fail(f"{p} does not exist")
    try:
        report = score_files(gold, pred, drop_invalid=not keep_invalid_labels)
    except RecordError as exc:
        raise fail(str(exc)) from exc
    if out_file is not None:
        write_json(out_file, report)
    stdout.print_json(json.dumps(report))


@eval_app.command("run")
def eval_run(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model folder (Hugging Face format) or hub name.")],
    suite: Annotated[str, typer.Option(help="zero-shot, supervised or all.")] = "all",
    limit: Annotated[Optional[int], typer.Option(help="Sentences per dataset (seeded sample; default: config eval.limit).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Prepared data (default: config data.prepared_dir).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Report folder (default: config eval.out_dir).")] = None,
    backend: Annotated[Optional[str], typer.Option(help="auto, transformers or vllm.")] = None,
) -> None:
    """Evaluate a model on the suites; writes report.json/.md/.html, plots and predictions."""
    from ..evaluation import evaluate
    from ..steps import model_lineage
    from ..inference import make_engine
    from ..modeling import ModelLoadError

    extra = [f"eval.limit={limit}"] if limit is not None else []
    if backend:
        extra.append(f"eval.backend={backend}")
    cfg = get_config(ctx, extra)
    suites = ["zero-shot", "supervised"] if suite == "all" else [suite]
    if any(s not in ("zero-shot", "supervised") for s in suites):
        raise fail(f"unknown suite {suite!r}; use zero-shot, supervised or all")
    data = data_dir or Path(cfg.data.prepared_dir)
    out_dir = out or Path(cfg.eval.out_dir)
    lineage = model_lineage(model)
    try:
        engine = make_engine(model, cfg.eval.backend, cfg.eval.batch_size)
        report = evaluate(engine, cfg, suites, data, out_dir, model, lineage)
    except (ModelLoadError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    table = Table(title=f"Evaluation of {model} (limit {cfg.eval.limit})")
    for col in ("suite", "dataset", "paper F1", "strict F1", "parse rate"):
        table.add_column(col)
    for suite_name, s in report["suites"].items():
        for name, ds in s["datasets"].items():
            table.add_row(suite_name, name, f"{100 * ds['paper']['f1']:.1f}", f"{100 * ds['strict']['f1']:.1f}", f"{ds['parse_rate']:.2f}")
        table.add_row(suite_name, "[bold]macro", f"[bold]{100 * s['macro']['paper_f1']:.1f}", f"{100 * s['macro']['strict_f1']:.1f}",
                      f"{s['mean_parse_rate']:.2f}")
    stdout.print(table)
    stdout.print(f"report: {out_dir / 'report.html'}")


def promote_cmd(
    ctx: typer.Context,
    report: Annotated[Optional[Path], typer.Option(help="The candidate's report.json.")] = None,
    model: Annotated[Optional[str], typer.Option(help="The candidate model's folder (local, or s3://... holding config.json).")] = None,
    registry: Annotated[Optional[str], typer.Option(help="Registry URI (default: config promotion.registry_uri).")] = None,
    rollback: Annotated[bool, typer.Option("--rollback", help="Move the champion back to the previous version.")] = False,
) -> None:
    """Gate a candidate against thresholds and the current champion; on promotion copy the model into
    the registry (models/<version>/) and move the champion pointer to that copy.

    Exit code 0 when promoted (or rolled back), 3 when the gate refuses the candidate, 1 when the
    registry cannot be read or written (nothing promoted before is changed).
    """
    from ..promotion import Registry, RegistryError, promote, rollback as do_rollback

    cfg = get_config(ctx)
    try:
        reg = Registry(registry or cfg.promotion.registry_uri)
        if rollback:
            stdout.print_json(json.dumps(do_rollback(reg)))
            return
        if report is None or model is None:
            raise fail("--report and --model are required (or --rollback)")
        if not report.is_file():
            raise fail(f"report {report} does not exist")
        decision = promote(json.loads(report.read_text()), model, cfg.promotion, reg, progress=True)
    except RegistryError as exc:
        raise fail(str(exc), 1) from exc
    except (ValueError, KeyError) as exc:  # json.JSONDecodeError is a ValueError
        raise fail(f"cannot gate {report}: {exc}" if not rollback else str(exc)) from exc
    stdout.print_json(json.dumps(decision.to_dict()))
    if decision.promoted:
        stdout.print(f"[bold green]PROMOTED[/] {decision.reason}\nserving copy: {decision.model_uri}", soft_wrap=True)
    else:
        stdout.print(f"[bold yellow]NOT PROMOTED[/] {decision.reason}", soft_wrap=True)
        raise typer.Exit(3)
