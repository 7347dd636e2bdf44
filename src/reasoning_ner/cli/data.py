"""``rner data``: prepare, show, validate and fetch datasets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .common import fail, get_config, stdout

data_app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True)


@data_app.command("prepare")
def data_prepare(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Dataset name, comma-separated names, or 'all'.")] = "all",
    source: Annotated[Optional[Path], typer.Option(help="Raw data folder (default: config data.source_dir).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: config data.prepared_dir).")] = None,
    format: Annotated[Optional[str], typer.Option("--format", help="native or instructuie.")] = None,
    keep_invalid_labels: Annotated[
        Optional[bool], typer.Option("--keep-invalid-labels/--drop-invalid-labels", help="Keep misc/else/other labels.")
    ] = None,
) -> None:
    """Convert raw datasets to canonical JSONL: <out>/<dataset>/<split>.jsonl plus stats.json."""
    from ..data.formats import FormatError
    from ..data.prepare import prepare

    cfg = get_config(ctx)
    source_dir = source or Path(cfg.data.source_dir)
    out_dir = out or Path(cfg.data.prepared_dir)
    fmt = format or cfg.data.source_format
    if fmt not in ("native", "instructuie"):
        raise fail(f"--format {fmt!r}: use native or instructuie")
    keep = cfg.data.keep_invalid_labels if keep_invalid_labels is None else keep_invalid_labels
    if not source_dir.is_dir():
        raise fail(f"source folder {source_dir} does not exist (set --source or RNER_DATA_DIR)")
    try:
        summary = prepare(dataset, source_dir, out_dir, fmt, keep, progress=sys.stderr.isatty())
    except (ValueError, FileNotFoundError, FormatError) as exc:
        raise fail(str(exc)) from exc
    table = Table(title=f"Prepared datasets ({fmt}) in {out_dir}")
    for col in ("dataset", "split", "sentences", "entities", "labels"):
        table.add_column(col, justify="right" if col in ("sentences", "entities", "labels") else "left")
    for name, stats in summary.items():
        for split, s in stats["splits"].items():
            table.add_row(name, split, str(s["sentences"]), str(s["entities"]), str(len(s["per_label"])))
    stdout.print(table)


@data_app.command("show")
def data_show(
    path: Annotated[Path, typer.Argument(help="A canonical JSONL file.")],
    n: Annotated[int, typer.Option(help="How many records.")] = 3,
) -> None:
    """Print the first records of a canonical JSONL file."""
    from ..records import RecordError, read_jsonl

    if not path.is_file():
        raise fail(f"{path} does not exist")
    try:
        for i, obj in enumerate(read_jsonl(path)):
            if i >= n:
                break
            stdout.print_json(json.dumps(obj, ensure_ascii=False))
    except RecordError as exc:
        raise fail(str(exc)) from exc


@data_app.command("validate")
def data_validate(
    ctx: typer.Context,
    train: Annotated[list[Path], typer.Option("--train", help="Training JSONL file; repeat for several.")],
    out: Annotated[Path, typer.Option(help="Folder for validation.json and data_docs/.")],
    eval_: Annotated[
        Optional[list[Path]], typer.Option("--eval", help="Evaluation JSONL file (leakage check); repeatable.")
    ] = None,
    eval_dir: Annotated[
        Optional[Path], typer.Option(help="Prepared-data folder: adds every */test.jsonl and */dev.jsonl.")
    ] = None,
    kind: Annotated[str, typer.Option(help="ner (canonical records) or cot (records with a reasoning chain).")] = "ner",
) -> None:
    """Validate datasets with Great Expectations; exit 1 when any expectation fails."""
    from ..records import RecordError
    from ..validation import find_eval_files, format_report, validate_dataset

    cfg = get_config(ctx)
    if kind not in ("ner", "cot"):
        raise fail(f"--kind must be ner or cot, not {kind!r}")
    try:
        eval_files = [*(eval_ or []), *(find_eval_files(eval_dir) if eval_dir is not None else [])]
        report = validate_dataset(
            train, eval_files, kind, cfg.data.zero_shot_datasets, out,  # type: ignore[arg-type]
            min_chain_words=cfg.cot.min_chain_words, max_chain_words=cfg.cot.max_chain_words,
        )
    except (RecordError, ValueError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(format_report(report))
    raise typer.Exit(0 if report.success else 1)


@data_app.command("fetch")
def data_fetch(
    repo: Annotated[str, typer.Option(help="Git repository: a local path or a URL (https://, ssh://, git@host:org/repo.git).")],
    path: Annotated[str, typer.Option(help="DVC-tracked file or folder in that repo, e.g. work/cot/accepted.jsonl.")],
    out: Annotated[Path, typer.Option(help="Local folder; the data lands in <out>/<name> with <out>/lineage.json.")],
    rev: Annotated[
        Optional[str], typer.Option(help="Git revision (sha, branch, tag). Default: HEAD of a local repo, the default branch of a URL.")
    ] = None,
    remote: Annotated[
        Optional[str], typer.Option(help="DVC remote name in that repo, or a storage URL/path (s3://bucket/path, /mnt/dvc).")
    ] = None,
) -> None:
    """Fetch a DVC-versioned dataset at an exact git revision and write its lineage.json.

    Credentials come from the environment only: RNER_GIT_TOKEN for private https git repos,
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for MinIO) for S3 remotes.
    """
    from ..lineage import fetch_dataset

    try:
        lineage = fetch_dataset(repo, rev, path, out, remote=remote)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    stdout.print_json(json.dumps(lineage))


@data_app.command("import-ner-cot")
def data_import_ner_cot(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="NER-CoT records (JSON list or JSONL): a file, a folder of them, a "
                                          "`dvc import`-ed path, or an fsspec URL such as s3://bucket/ner-cot.json.")],
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: config cot.out_dir, where SFT reads).")] = None,
    eval_dir: Annotated[
        Optional[Path], typer.Option(help="Prepared data whose */test.jsonl and */dev.jsonl sentences are dropped "
                                     "(default: config data.prepared_dir).")
    ] = None,
) -> None:
    """Import the paper's NER-CoT chains as stage 1's output: accepted.jsonl, rejected.jsonl (a reason per record), stats.json.

    Each chain gets the structural checks a teacher's chain gets (labels in the record's schema, spans in
    the sentence, every entity in the chain, chain length); sentences of any evaluation split are dropped.
    """
    from ..cot.ner_cot import import_ner_cot
    from ..data.formats import FormatError
    from ..records import RecordError
    from ..validation import find_eval_files

    cfg = get_config(ctx)
    out_dir = out or Path(cfg.cot.out_dir)
    try:
        stats = import_ner_cot(source, out_dir, cfg.cot, find_eval_files(eval_dir or Path(cfg.data.prepared_dir)),
                               progress=sys.stderr.isatty())
    except (FileNotFoundError, FormatError, RecordError, OSError) as exc:
        raise fail(str(exc)) from exc
    reasons = ", ".join(f"{k} {v}" for k, v in stats["rejections_by_reason"].items()) or "none"
    stdout.print(f"{stats['accepted']} accepted, {stats['rejected']} rejected (rejections: {reasons}); "
                 f"dropped as evaluation sentences: {sum(stats['dropped_eval_overlap'].values())} -> {out_dir}")


@data_app.command("harvest")
def data_harvest(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="New output folder: accepted.jsonl, rejected.jsonl, stats.json, heldout.jsonl, "
                                      "lineage.json, harvest.json, validation/.")],
    since: Annotated[Optional[str], typer.Option(help="First day of the window, YYYY-MM-DD (default: "
                                                 "flywheel.harvest_window_days before --until).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Last day of the window, YYYY-MM-DD, included (default: today, UTC).")] = None,
    log_root: Annotated[Optional[str], typer.Option(help="Where the sink wrote the logs (default: flywheel.log_root).")] = None,
    teacher_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL of the teacher (required: "
                                                       "the offline teacher cannot label traffic).")] = None,
    teacher_model: Annotated[Optional[str], typer.Option(help="Model name sent to the teacher.")] = None,
    judge_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL of the judge; unset = no judge.")] = None,
    budget: Annotated[Optional[int], typer.Option(help="Most sentences sent to the teacher (default: flywheel.harvest_budget).")] = None,
    dvc: Annotated[bool, typer.Option("--dvc/--no-dvc", help="`dvc add` the output as a new dataset version, and "
                                      "`dvc push` it when the DVC repository has a default remote.")] = False,
) -> None:
    """Logged traffic of a date window -> deduplicated, evaluation sentences dropped, sampled (uncertain first, then
    label-balanced), re-annotated by the teacher (+ judge), validated by the gate; exit 1 when the gate fails.

    docs/flywheel.md ("Curate") describes each step. API keys come from the environment (cot.teacher_api_key_env).
    """
    from ..flywheel.harvest import EmptyWindowError, GateFailedError, HarvestError, harvest, window
    from ..flywheel.harvest_dvc import DvcError, track
    from ..records import RecordError

    extra = [f"flywheel.log_root={log_root}"] if log_root else []
    extra += ["cot.teacher=openai", f"cot.teacher_url={teacher_url}"] if teacher_url else []
    for key, value in (("cot.teacher_model", teacher_model), ("cot.judge_url", judge_url), ("flywheel.harvest_budget", budget)):
        if value is not None:
            extra.append(f"{key}={value}")
    cfg = get_config(ctx, extra)
    try:
        first, last = window(cfg, since, until)
        summary = harvest(cfg, since=first, until=last, out_dir=out, progress=sys.stderr.isatty())
    except EmptyWindowError as exc:
        raise fail(str(exc), code=3) from exc
    except GateFailedError as exc:
        raise fail(str(exc), code=1) from exc
    except (HarvestError, RecordError, FileNotFoundError, ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    skipped = ", ".join(f"{k} {v}" for k, v in summary["skipped"].items()) or "none"
    stdout.print(f"{first}..{last}: {summary['records']} logged records in {summary['part_files']} part(s) (skipped: {skipped}), "
                 f"{summary['distinct_sentences']} distinct, {summary['dropped_eval_sentences']} dropped as evaluation "
                 f"sentences, {summary['selected']} sent to the teacher ({summary['selected_uncertain']} uncertain): "
                 f"{summary['accepted']} accepted for training, {summary['heldout']} held out, {summary['rejected']} rejected "
                 f"-> {out}")
    if dvc:
        try:
            tracked = track(out)
        except DvcError as exc:
            raise fail(str(exc)) from exc
        pushed = f", pushed to remote {tracked['pushed_to']}" if tracked["pushed_to"] else " (no default remote: not pushed)"
        stdout.print(f"DVC: {tracked['dvc_file']} (md5 {tracked['md5']}){pushed}; commit the .dvc file to git")
