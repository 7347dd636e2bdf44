"""``rner``: the one entry point for every stage (local runs, DVC stages, KFP components)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .config import Config, ConfigError, load_config

app = typer.Typer(help="ReasoningNER: reason, then extract named entities.", no_args_is_help=True, add_completion=False)
data_app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True)
model_app = typer.Typer(help="Build and inspect models.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate predictions and models.", no_args_is_help=True)
config_app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)
cot_app = typer.Typer(help="Stage 1: synthesize reasoning chains with a teacher LLM.", no_args_is_help=True)
train_app = typer.Typer(help="Stages 2 and 3: CoT tuning (SFT) and reasoning enhancement (GRPO) with trl.", no_args_is_help=True)
k8s_app = typer.Typer(help="Kubernetes objects for serving: the kustomize tree and rendered objects.", no_args_is_help=True)
pipeline_app = typer.Typer(help="The Kubeflow pipeline: compile, run locally, submit.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(eval_app, name="eval")
app.add_typer(config_app, name="config")
app.add_typer(cot_app, name="cot")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(k8s_app, name="k8s")
app.add_typer(train_app, name="train")

err_console = Console(stderr=True)
stdout = Console()


def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="YAML config (default: ./params.yaml when present and no --profile is given)."),
    ] = None,
    profile: Annotated[Optional[str], typer.Option(help="Profile: tiny-cpu, qwen3-1.7b, qwen3-8b.")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. --set prompt.style=paper.")
    ] = None,
) -> None:
    # An explicit --profile without --config means that profile as defined, not params.yaml's
    # local settings layered on top of it.
    default = Path("params.yaml") if profile is None and Path("params.yaml").is_file() else None
    path = config if config is not None else default
    ctx.obj = {"config_path": path, "profile": profile, "overrides": list(set_ or [])}


def get_config(ctx: typer.Context, extra: list[str] | None = None) -> Config:
    opts = ctx.find_root().obj or {}
    try:
        return load_config(opts.get("config_path"), opts.get("profile"), [*opts.get("overrides", []), *(extra or [])])
    except ConfigError as exc:
        raise fail(str(exc)) from exc


# ------------------------------------------------------------------------------------------ data


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
    from .data.formats import FormatError
    from .data.prepare import prepare

    cfg = get_config(ctx)
    source_dir = source or Path(cfg.data.source_dir)
    out_dir = out or Path(cfg.data.prepared_dir)
    fmt = format or cfg.data.source_format
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
    from .records import RecordError, read_jsonl

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
    from .records import RecordError
    from .validation import find_eval_files, format_report, validate_dataset

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
    from .lineage import fetch_dataset

    try:
        lineage = fetch_dataset(repo, rev, path, out, remote=remote)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    stdout.print_json(json.dumps(lineage))


# ------------------------------------------------------------------------------------------- cot


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

    Resumable: run the same command again after an interruption and it finishes the rest.
    API keys come from the environment (cot.teacher_api_key_env / cot.judge_api_key_env).
    """
    from .cot.synthesize import synthesize
    from .records import RecordError

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
        from .validation import find_eval_files

        eval_files = find_eval_files(eval_dir) if eval_dir is not None else []
        stats = synthesize(input, out_dir, cfg.cot, cfg.data.zero_shot_datasets, sys.stderr.isatty(), eval_files)
    except (RecordError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    reasons = ", ".join(f"{k} {v}" for k, v in stats["rejections_by_reason"].items()) or "none"
    if stats["dropped_eval_overlap"]:
        stdout.print(f"dropped (sentence also in an evaluation split): {stats['dropped_eval_overlap']}")
    stdout.print(
        f"{stats['accepted']} accepted, {stats['rejected']} rejected ({stats['accept_rate']:.1%} accepted; "
        f"rejections: {reasons}) -> {out_dir}; {stats['last_run']['throughput_rps']} records/s this run"
    )


@cot_app.command("stub-teacher")
def cot_stub_teacher(
    gold: Annotated[list[Path], typer.Option(help="Canonical JSONL whose gold annotations the stub answers with.")],
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    latency_ms: Annotated[float, typer.Option(help="Added latency per request.")] = 0.0,
    faults: Annotated[str, typer.Option(help="Fault rates, e.g. rate_limit=0.1,truncated=0.05.")] = "",
) -> None:
    """Serve a stub OpenAI-compatible teacher/judge (stands in for vLLM in demos and tests)."""
    from .cot.stub_teacher import FaultPlan, parse_faults, serve_stub

    try:
        plan = FaultPlan(latency_s=latency_ms / 1000, rates=parse_faults(faults))
    except ValueError as exc:
        raise fail(str(exc)) from exc
    err_console.print(f"stub teacher on http://{host}:{port}/v1 (Ctrl-C to stop)")
    serve_stub(gold, host, port, plan)


# ----------------------------------------------------------------------------------------- model


@model_app.command("init-tiny")
def model_init_tiny(
    ctx: typer.Context,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default: config model.tiny_dir).")] = None,
    corpus: Annotated[Optional[Path], typer.Option(help="Extra text file (one text per line) for the tokenizer.")] = None,
    data_dir: Annotated[
        Optional[Path], typer.Option(help="Prepared data folder whose train splits join the tokenizer corpus.")
    ] = None,
) -> None:
    """Build the tiny local base model (random weights, own BPE tokenizer) in Hugging Face format."""
    from .modeling import init_tiny

    cfg = get_config(ctx)
    out_dir = out or Path(cfg.model.tiny_dir)
    extra: list[str] = []
    if corpus is not None:
        if not corpus.is_file():
            raise fail(f"corpus file {corpus} does not exist")
        extra = [line.rstrip("\n") for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    data = data_dir if data_dir is not None else Path(cfg.data.prepared_dir)
    summary = init_tiny(out_dir, cfg.model.tiny, corpus=extra, data_dir=data if data.is_dir() else None, prompt_cfg=cfg.prompt)
    stdout.print_json(json.dumps(summary, default=str))


# ------------------------------------------------------------------------------------------ eval


@eval_app.command("score")
def eval_score(
    gold: Annotated[Path, typer.Option(help="Gold canonical JSONL.")],
    pred: Annotated[Path, typer.Option(help="Predictions JSONL (canonical records or {id, output}).")],
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Also write the JSON report here.")] = None,
    keep_invalid_labels: Annotated[bool, typer.Option(help="Score misc/else/other labels too.")] = False,
) -> None:
    """Score predictions: paper-parity string-set F1 and strict offset F1, per dataset and label."""
    from .records import RecordError, write_json
    from .scoring import score_files

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
    from .evaluation import evaluate
    from .inference import make_engine
    from .modeling import ModelLoadError

    extra = [f"eval.limit={limit}"] if limit is not None else []
    if backend:
        extra.append(f"eval.backend={backend}")
    cfg = get_config(ctx, extra)
    suites = ["zero-shot", "supervised"] if suite == "all" else [suite]
    if any(s not in ("zero-shot", "supervised") for s in suites):
        raise fail(f"unknown suite {suite!r}; use zero-shot, supervised or all")
    data = data_dir or Path(cfg.data.prepared_dir)
    out_dir = out or Path(cfg.eval.out_dir)
    lineage_file = Path(model) / "lineage.json"
    lineage = json.loads(lineage_file.read_text()) if lineage_file.is_file() else {}
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


@app.command("promote")
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
    from .promotion import Registry, RegistryError, promote, rollback as do_rollback

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


# -------------------------------------------------------------------------------------- pipeline
# The pipeline lives in the top-level `pipelines/` and `components/` packages (the KFP adapters);
# the library itself never imports kfp, so these commands import them lazily.


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Optional[Path], typer.Option(help="Output YAML (default: pipelines/reasoning_ner_pipeline.yaml).")] = None,
) -> None:
    """Compile the cluster pipeline to YAML (the committed file, next to its source)."""
    from pipelines.reasoning_ner_pipeline import COMPILED, compile_pipeline

    path = compile_pipeline(out or COMPILED)
    stdout.print(f"compiled {path}")


@pipeline_app.command("run-local")
def pipeline_run_local(
    ctx: typer.Context,
    work: Annotated[Path, typer.Option(help="Work folder for the pipeline root, registry and summary.")] = Path("work"),
    param: Annotated[
        Optional[list[str]], typer.Option("--param", "-p", help="Pipeline parameter NAME=VALUE (repeatable).")
    ] = None,
) -> None:
    """Run the whole pipeline locally with kfp.local (profile tiny-cpu by default): the main job."""
    import yaml

    from pipelines.local import run_local

    opts = ctx.find_root().obj or {}
    params = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--param {item!r} is not NAME=VALUE")
        params[name] = yaml.safe_load(value)
    summary = run_local(work, profile=opts.get("profile") or "tiny-cpu", **params)
    stdout.print_json(json.dumps(summary))
    # soft_wrap: long paths stay on one line, so they can be copied.
    stdout.print(f"decision: [bold]{summary['decision']}[/] after {summary['seconds']} s", soft_wrap=True)
    stdout.print(f"evaluation report (HTML): {summary['report']}", soft_wrap=True)
    if summary["champion"]:
        stdout.print(f"champion model: {summary['champion']['model_uri']}", soft_wrap=True)
        stdout.print(f"serve it: rner serve --model {summary['champion']['model_uri']}", soft_wrap=True)


@pipeline_app.command("submit")
def pipeline_submit(
    host: Annotated[Optional[str], typer.Option(envvar="KF_PIPELINES_ENDPOINT", help="Kubeflow Pipelines API endpoint, e.g. https://kubeflow.example.com/pipeline (env KF_PIPELINES_ENDPOINT).")] = None,
    token_env: Annotated[str, typer.Option(help="Environment variable holding a Kubeflow Pipelines token (audience pipelines.kubeflow.org).")] = "KF_PIPELINES_TOKEN",
    token_file: Annotated[Optional[Path], typer.Option(help="File holding the token instead (re-read per request); in a pod the projected /var/run/secrets/kubeflow/pipelines/token is used when present.")] = None,
    namespace: Annotated[Optional[str], typer.Option(envvar="RNER_KFP_NAMESPACE", help="Profile namespace (multi-user Kubeflow).")] = None,
    experiment: Annotated[str, typer.Option(envvar="RNER_KFP_EXPERIMENT", help="Experiment (created when absent).")] = "reasoning-ner",
    service_account: Annotated[Optional[str], typer.Option(envvar="RNER_KFP_SERVICE_ACCOUNT", help="Kubernetes service account the run's pods use.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Pipeline parameter NAME=VALUE (repeatable; typed by the pipeline's definitions, JSON for dict/list).")] = None,
    recurring_cron: Annotated[Optional[str], typer.Option(help="Schedule a recurring run instead: cron, 5 fields or KFP's 6 (seconds first).")] = None,
    package: Annotated[Optional[Path], typer.Option(help="Compiled pipeline (default: pipelines/reasoning_ner_pipeline.yaml).")] = None,
    version_name: Annotated[Optional[str], typer.Option(help="Pipeline version name (default: <package version>-<12 hex of the uploaded YAML's sha256>, so a changed pipeline is always a new version).")] = None,
    run_name: Annotated[Optional[str], typer.Option(help="Run name (default: pipeline and version name).")] = None,
    image_tag: Annotated[Optional[str], typer.Option(envvar="RNER_IMAGE_TAG", help="Tag every project image reference is rewritten to before upload, e.g. sha-<12 hex> from main (default: the release tag).")] = None,
    image_digest: Annotated[Optional[list[str]], typer.Option(help="IMAGE=sha256:... pins one image by digest (repeatable; cpu, train-gpu, serve); env RNER_IMAGE_DIGESTS.")] = None,
    check_version: Annotated[Optional[bool], typer.Option("--check-version/--skip-version-check", help="Check the KFP backend's version against the minimum the pipeline needs (default: on; env RNER_KFP_SKIP_VERSION_CHECK).")] = None,
) -> None:
    """Upload the compiled pipeline as a new version (creating the pipeline if absent) and start a run, or a recurring run."""
    from pipelines.submit import COMPILED, SubmitError, resolve_token, submit

    try:
        token = resolve_token(token_env, token_file)
        digests = None
        if image_digest:
            pairs = [item.partition("=") for item in image_digest]
            if any(not sep for _, sep, _ in pairs):
                raise fail(f"--image-digest takes IMAGE=sha256:..., got {image_digest}")
            digests = {name: digest for name, _, digest in pairs}
        result = submit(host or "", token=token, namespace=namespace, experiment=experiment,
                        service_account=service_account, params=list(param or []), recurring_cron=recurring_cron,
                        package=package or COMPILED, version_name=version_name, run_name=run_name,
                        image_tag=image_tag, image_digests=digests, check_version=check_version)
    except SubmitError as exc:
        raise fail(str(exc)) from exc
    stdout.print_json(json.dumps(result.to_dict()))
    what = f"recurring run {result.recurring_run_id} ({result.cron})" if result.recurring_run_id else f"run {result.run_id}"
    stdout.print(f"submitted {what}: pipeline {result.pipeline_id} version {result.version_name}, token from {token.source}")


@app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve_cmd(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(help="Model folder (Hugging Face format) or hub name for the in-process backend.")] = None,
    host: Annotated[Optional[str], typer.Option(help="Bind address (default: serve.host = 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: serve.port = 8080).")] = None,
    name: Annotated[Optional[str], typer.Option(help="Model name on the routes (default: serve.model_name).")] = None,
    backend: Annotated[Optional[str], typer.Option(help="transformers (in process, dynamic batching) or remote (OpenAI-compatible, e.g. vLLM).")] = None,
    remote_url: Annotated[Optional[str], typer.Option(help="Base URL of the remote OpenAI-compatible API, e.g. http://ner-llm-predictor/openai/v1.")] = None,
    max_reasoning_tokens: Annotated[Optional[int], typer.Option(help="Deployment cap on thinking tokens (default: uncapped).")] = None,
    # The arguments KServe gives a transformer container (InferenceService spec.transformer).
    kserve_model_name: Annotated[Optional[str], typer.Option("--model_name", hidden=True)] = None,
    kserve_http_port: Annotated[Optional[int], typer.Option("--http_port", hidden=True)] = None,
    kserve_predictor_host: Annotated[Optional[str], typer.Option("--predictor_host", hidden=True)] = None,
) -> None:
    """Serve a model with KServe: V1/V2 predict, OpenAI-compatible chat, health and /metrics.

    Limits, batching and timeouts come from the config's serve section, RNER_SERVE_<FIELD>
    environment variables, or --set serve.<field>=value. Stop with Ctrl-C (or SIGTERM).
    """
    import os

    from pydantic import ValidationError

    from .modeling import ModelLoadError
    from .serving import settings_from_config
    from .serving.server import serve

    if ctx.args:
        err_console.print(f"ignoring arguments serve does not use: {' '.join(ctx.args)}")
    cfg = get_config(ctx)
    if remote_url is None and kserve_predictor_host and not os.environ.get("RNER_SERVE_REMOTE_URL"):
        remote_url = f"http://{kserve_predictor_host}/openai/v1"  # KServe's Hugging Face runtime
    try:
        settings = settings_from_config(cfg, host=host, port=port or kserve_http_port, model_name=name or kserve_model_name,
                                        backend=backend, remote_url=remote_url, max_reasoning_tokens=max_reasoning_tokens)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise fail(f"invalid serve settings: {problems}") from exc
    if settings.backend == "transformers" and not model:
        raise fail("--model is required with the transformers backend (or use --backend remote --remote-url URL)")
    err_console.print(f"serving {settings.model_name!r} ({settings.backend}) on http://{settings.host}:{settings.port} "
                      f"- predict: /v1/models/{settings.model_name}:predict, OpenAI: /openai/v1 (Ctrl-C to stop)")
    try:
        serve(settings, model)
    except (ModelLoadError, ValueError) as exc:
        raise fail(str(exc)) from exc


# ----------------------------------------------------------------------------------------- train


@train_app.command("sft")
def train_sft_cmd(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option("--data", help="Canonical CoT JSONL (repeatable), e.g. work/cot/accepted.jsonl.")],
    out: Annotated[Path, typer.Option(help="Output folder: checkpoints/, model/, summary.json, loss.png.")],
    base_model: Annotated[Optional[str], typer.Option(help="Hub name or path (default: config model.base_model; 'tiny' = model.tiny_dir).")] = None,
    eval_file: Annotated[Optional[Path], typer.Option("--eval", help="JSONL records for a final parse-rate/F1 check.")] = None,
    eval_n: Annotated[int, typer.Option(help="Seeded sample size of --eval records.")] = 200,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Resume from the last checkpoint in OUT.")] = True,
) -> None:
    """CoT tuning with trl's SFTTrainer (full or LoRA, sft.finetune); exports a Hugging Face model."""
    import random

    from .modeling import ModelLoadError
    from .records import RecordError
    from .training.sft import NonFiniteLossError, TrainingDataError, as_records, train_sft

    cfg = get_config(ctx)
    try:
        evals = as_records(eval_file) if eval_file is not None else None
        if evals is not None and len(evals) > eval_n:
            evals = random.Random(cfg.seed).sample(evals, eval_n)
        summary = train_sft(cfg, data, out, base_model=base_model, eval_records=evals, resume=resume,
                            progress=sys.stderr.isatty())
    except (TrainingDataError, RecordError, ModelLoadError) as exc:
        raise fail(str(exc)) from exc
    except NonFiniteLossError as exc:
        raise fail(str(exc), 3) from exc
    stdout.print_json(json.dumps(summary, default=str))


@train_app.command("grpo")
def train_grpo_cmd(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="SFT output folder (its model/ is used) or any Hugging Face model folder.")],
    data: Annotated[list[Path], typer.Option("--data", help="Canonical training JSONL (repeatable): the RL prompt pool.")],
    out: Annotated[Path, typer.Option(help="Output folder: model/, checkpoints/, metrics.jsonl, plots/, summary.json.")],
    max_steps: Annotated[Optional[int], typer.Option(help="Override grpo.max_steps.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Resume from the last checkpoint in OUT.")] = True,
) -> None:
    """Reasoning enhancement with trl's GRPOTrainer; reward = 10 x F1 + 1 x schema (weights in config)."""
    from .modeling import ModelLoadError
    from .records import RecordError
    from .training.grpo import GRPOError, train_grpo
    from .training.rl_data import RLDataError

    cfg = get_config(ctx)
    try:
        summary = train_grpo(cfg, model, data, out, max_steps=max_steps, resume=resume)
    except (GRPOError, RLDataError, RecordError, ModelLoadError) as exc:
        raise fail(str(exc)) from exc
    keys = ("model_dir", "global_steps", "train_seconds", "final_metrics")
    stdout.print_json(json.dumps({k: summary.get(k) for k in keys}, default=str))


# ------------------------------------------------------------------------------------------- k8s


@k8s_app.command("manifests")
def k8s_manifests(
    out: Annotated[Path, typer.Option(help="Folder of the kustomize tree.")] = Path("manifests"),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when the folder is stale.")] = False,
) -> None:
    """Generate the kustomize tree (base + overlays knative, standard-keda, standard-external-keda, cpu-smoke)."""
    from .k8s.manifests import generate_manifests, stale_manifests

    if check:
        stale = stale_manifests(out)
        if stale:
            raise fail(f"{out} is stale: {', '.join(stale)}; run `rner k8s manifests --out {out}`", 1)
        stdout.print(f"{out} is up to date")
        return
    paths = generate_manifests(out)
    stdout.print(f"wrote {len(paths)} files under {out}")


@k8s_app.command("render")
def k8s_render(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(help="storageUri (default: deploy.serving.storage.storage_uri).")] = None,
) -> None:
    """Print the objects for the configured deploy.serving settings as YAML (pipe to kubectl apply -f -)."""
    import yaml

    from .k8s.inference_service import build_objects

    cfg = get_config(ctx)
    try:
        objs = build_objects(cfg.deploy.serving, model)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))


@app.command("deploy")
def deploy_cmd(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(help="s3://... or pvc://... (default: the registry champion).")] = None,
    namespace: Annotated[Optional[str], typer.Option(help="Default: deploy.serving.namespace.")] = None,
    canary: Annotated[Optional[int], typer.Option(
        help="Canary share 1-99 (Knative mode only); 0 = direct. Default: deploy.canary_percent in Knative mode, 0 in Standard.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for readiness (and promote the canary).")] = True,
    probe: Annotated[Optional[bool], typer.Option("--probe/--no-probe", help="HTTP-probe the canary before promotion.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print and validate the patch against the CRD; contact no cluster.")] = False,
    crd_dir: Annotated[Optional[Path], typer.Option(help="CRD folder for --dry-run (default: $RNER_CRD_DIR or ../shared/k8s/crds).")] = None,
    unmanaged: Annotated[bool, typer.Option("--unmanaged", help="Also update an InferenceService no Helm release owns "
                                            "(applied with kubectl from manifests/).")] = False,
) -> None:
    """Roll the promoted model out to the KServe InferenceService (canary first in Knative mode).

    The InferenceService must exist (the Helm chart installs it). Exit code 0 on success, 1 when the
    rollout failed or was refused (a failed canary is rolled back).
    """
    from .k8s.kubeapi import KubeConfigError
    from .k8s.rollout import DeployError, build_deploy_patch, deploy, validate_deploy_patch

    cfg = get_config(ctx)
    dep = cfg.deploy
    serving = dep.serving if namespace is None else dep.serving.with_updates(namespace=namespace)
    version = None
    if model is None:
        from .promotion import Registry

        champion = Registry(cfg.promotion.registry_uri).champion()
        if champion is None:
            raise fail(f"no champion in the registry {cfg.promotion.registry_uri}; run `rner promote` or pass --model")
        model, version = champion["model_uri"], champion["version"]
    if canary is None:
        canary = dep.canary_percent if serving.mode == "knative" else 0
    try:
        if dry_run:
            from .k8s.schema import ManifestValidationError

            patch = build_deploy_patch(model, serving, canary, model_version=version)
            try:
                validate_deploy_patch(patch, serving, crd_dir=crd_dir)
            except (ManifestValidationError, FileNotFoundError) as exc:
                raise fail(str(exc), 1) from exc
            stdout.print_json(json.dumps(patch))
            return
        result = deploy(model, serving, serving.namespace, canary, wait=wait, timeout_s=dep.timeout_s,
                        poll_interval_s=dep.poll_interval_s, probe=dep.probe if probe is None else probe,
                        rollback_on_failure=dep.rollback_on_failure, model_version=version, require_helm=not unmanaged)
    except DeployError as exc:
        if exc.result is not None:
            stdout.print_json(json.dumps(exc.result.to_dict()))
        raise fail(str(exc), 1) from exc
    except KubeConfigError as exc:
        raise fail(f"no cluster to deploy to: {exc}") from exc
    except ValueError as exc:
        raise fail(str(exc)) from exc
    stdout.print_json(json.dumps(result.to_dict()))


@app.command("preflight")
def preflight_cmd(
    ctx: typer.Context,
    values: Annotated[Optional[list[Path]], typer.Option("--values", "-f", help="Helm values file(s) you install with "
                      "(merged over --chart's values.yaml, as helm -f); default: the configuration's deploy.serving.")] = None,
    chart: Annotated[Optional[str], typer.Option(help="Chart folder whose values.yaml the --values files override "
                     "(default: charts/reasoning-ner when present; '' = none).")] = None,
    release: Annotated[str, typer.Option(help="Helm release name (with --values).")] = "reasoning-ner",
    namespace: Annotated[Optional[str], typer.Option("--namespace", "-n", help="Release namespace (helm -n) with "
                         "--values; else the serving namespace.")] = None,
    kubeconfig: Annotated[Optional[Path], typer.Option(help="Kubeconfig (default: $KUBECONFIG or ~/.kube/config).")] = None,
    context: Annotated[Optional[str], typer.Option(help="Kubeconfig context (default: current-context).")] = None,
    in_cluster: Annotated[bool, typer.Option("--in-cluster", help="Use the pod's ServiceAccount (helm test).")] = False,
    kfp_namespace: Annotated[Optional[str], typer.Option(help="Namespace of pipeline runs.")] = None,
    kfp_host: Annotated[Optional[str], typer.Option(help="KFP API URL (default: kfp.host or $KF_PIPELINES_ENDPOINT).")] = None,
    registry: Annotated[Optional[str], typer.Option(help="Registry URI the runs use (run parameter registry_uri).")] = None,
    dvc_remote: Annotated[Optional[str], typer.Option(help="DVC remote URL or name in .dvc/config (run parameter dvc_remote).")] = None,
    storage_class: Annotated[Optional[str], typer.Option(help="StorageClass of the multi-node shared PVC to check (default: multiNode.sharedPvc's, or the cluster default).")] = None,
    gpu_node_selector: Annotated[Optional[str], typer.Option(help="GPU pool node selector, JSON (run parameter gpu_node_selector).")] = None,
    gpu_tolerations: Annotated[Optional[str], typer.Option(help="GPU pool tolerations, JSON list (run parameter gpu_tolerations).")] = None,
    accelerator: Annotated[Optional[str], typer.Option(help="Accelerator resource (run parameter accelerator_type).")] = None,
    gpus: Annotated[Optional[int], typer.Option(help="GPUs per training step (run parameter gpus_per_step).")] = None,
    s3_endpoint: Annotated[Optional[str], typer.Option(help="Reach S3 through this URL (e.g. a kubectl port-forward).")] = None,
    skip: Annotated[Optional[list[str]], typer.Option(help="Skip a check by id (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the cluster before a run spends GPU hours: namespaces, ServiceAccounts, the S3 Secret KServe
    reads, S3 reachability, StorageClass, GPU nodes, KFP version, KServe (docs/preflight.md).

    Exit code 0 when no check fails (skipped and warnings allowed), 1 when one fails, 2 on bad input.
    """
    import os

    from .k8s import preflight as pf
    from .k8s.kubeapi import KubeConfigError

    default_chart = "charts/reasoning-ner" if Path("charts/reasoning-ner/values.yaml").is_file() else None
    try:
        target = pf.build_target(
            get_config(ctx), values or [], default_chart if chart is None else (chart or None), release, namespace,
            kfp_namespace=kfp_namespace, kfp_host=kfp_host, registry=registry, dvc_remote=dvc_remote,
            storage_class=storage_class, gpu_node_selector=gpu_node_selector, gpu_tolerations=gpu_tolerations,
            accelerator=accelerator, gpus=gpus, s3_endpoint=s3_endpoint, skip=skip or [])
        access = pf.cluster_access(kubeconfig, context, in_cluster)
    except (pf.PreflightError, KubeConfigError) as exc:
        raise fail(str(exc)) from exc
    report = pf.run_preflight(target, access, in_cluster=in_cluster, kfp_token=os.environ.get("KF_PIPELINES_TOKEN"))
    if as_json:
        stdout.print_json(json.dumps(report.to_dict()))
    else:
        stdout.print(pf.report_table(report))
        stdout.print(pf.summary_line(report), soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------- config


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the resolved configuration (defaults + profile + file + overrides) as YAML."""
    stdout.print(get_config(ctx).dump_yaml(), highlight=False, markup=False)


# --------------------------------------------------------------------------------------- summary


@app.command("summary")
def summary(work: Annotated[Path, typer.Option(help="The local work folder.")] = Path("work")) -> None:
    """Summarize what a local run produced: prepared datasets and models."""
    data_summary = work / "data" / "prepare_summary.json"
    if data_summary.is_file():
        info = json.loads(data_summary.read_text())
        table = Table(title=f"Datasets in {work / 'data'} ({info['source_format']}, from {info['source_dir']})")
        table.add_column("dataset")
        table.add_column("splits (sentences)")
        for name, splits in info["datasets"].items():
            table.add_row(name, ", ".join(f"{s} {n}" for s, n in splits.items()))
        stdout.print(table)
    else:
        stdout.print(f"no prepared data in {work / 'data'} (run `rner data prepare`)")
    models = sorted(p.parent for p in (work / "models").glob("*/config.json")) if (work / "models").is_dir() else []
    for model_dir in models:
        cfg = json.loads((model_dir / "config.json").read_text())
        size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
        stdout.print(
            f"model {model_dir}: {cfg.get('model_type')} hidden {cfg.get('hidden_size')} x {cfg.get('num_hidden_layers')} layers, "
            f"vocab {cfg.get('vocab_size')}, {size / 1e6:.1f} MB safetensors"
        )
    if not models:
        stdout.print(f"no models in {work / 'models'} (run `rner model init-tiny`)")
    stdout.print("next: `make test` runs the test suite; see README.md for the stages that follow.")
