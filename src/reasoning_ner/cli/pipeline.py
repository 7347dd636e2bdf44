"""``rner pipeline``: compile, run locally and submit the Kubeflow pipeline.

The pipeline lives in the top-level `pipelines/` and `components/` packages (the KFP adapters);
the library itself never imports kfp, so these commands import them lazily.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import ConfigError, resolve_config
from .common import fail, stdout

pipeline_app = typer.Typer(help="The Kubeflow pipeline: compile, run locally, submit.", no_args_is_help=True)


class Variant(str, Enum):
    main = "main"
    refresh = "refresh"


VARIANT_HELP = "main: the whole pipeline; refresh: retrain the champion on harvested traffic (docs/flywheel.md)."


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Optional[Path], typer.Option(help="Output YAML (default: the variant's committed file in pipelines/).")] = None,
    variant: Annotated[Variant, typer.Option(help=VARIANT_HELP)] = Variant.main,
) -> None:
    """Compile the cluster pipeline to YAML (the committed file, next to its source, and the chart's copy)."""
    if variant is Variant.refresh:
        from pipelines.refresh_pipeline import COMPILED, compile_refresh as compile_variant
    else:
        from pipelines.reasoning_ner_pipeline import COMPILED, compile_pipeline as compile_variant

    path = compile_variant(out or COMPILED)
    stdout.print(f"compiled {path}")


@pipeline_app.command("run-local")
def pipeline_run_local(
    ctx: typer.Context,
    work: Annotated[Path, typer.Option(help="Work folder for the pipeline root, registry and summary.")] = Path("work"),
    param: Annotated[
        Optional[list[str]], typer.Option("--param", "-p", help="Pipeline parameter NAME=VALUE (repeatable).")
    ] = None,
    variant: Annotated[Variant, typer.Option(help=VARIANT_HELP + " The refresh needs a champion in the registry and a "
                                             "teacher_url.")] = Variant.main,
) -> None:
    """Run the whole pipeline locally with kfp.local (profile tiny-cpu by default): the main job.

    `--set` and `--config` changes reach the steps through the run parameters that carry them
    (e.g. --set sft.max_steps=300 is sft_max_steps); a change no parameter carries is refused.
    """
    from pipelines.arguments import KFP_TYPES, run_arguments
    from pipelines.submit import SubmitError, parse_params

    if variant is Variant.refresh:
        from pipelines.refresh_local import run_refresh_local as run_local
        from pipelines.refresh_pipeline import CONFIG_PARAMETERS, refresh_local_pipeline as pipeline
    else:
        from pipelines.local import run_local
        from pipelines.reasoning_ner_pipeline import CONFIG_PARAMETERS, local_pipeline as pipeline

    opts = ctx.find_root().obj or {}
    config_path, profile = opts.get("config_path"), opts.get("profile")
    try:
        # The local run's profile is tiny-cpu unless named; ./params.yaml is the DVC stages' file, not read here.
        cfg = resolve_config(config_path, profile or (None if config_path else "tiny-cpu"), opts.get("overrides"))
        arguments = run_arguments(CONFIG_PARAMETERS, cfg, resolve_config(profile=cfg.profile))
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from exc
    defs = {name: {"parameterType": KFP_TYPES[spec.type]} for name, spec in pipeline.component_spec.inputs.items()}
    try:
        params = parse_params(list(param or []), defs=defs)
    except SubmitError as exc:
        raise fail(str(exc)) from exc
    arguments = {**arguments, **params}
    summary = run_local(work, profile=arguments.pop("profile"), **arguments)
    stdout.print_json(json.dumps(summary))
    # soft_wrap: long paths stay on one line, so they can be copied.
    stdout.print(f"decision: [bold]{summary['decision']}[/] after {summary['seconds']} s", soft_wrap=True)
    if summary["report"]:  # a refresh that ended early (empty window) has none
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
