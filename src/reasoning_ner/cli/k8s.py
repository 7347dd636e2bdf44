"""``rner k8s`` (the kustomize tree, rendered objects), ``rner deploy`` and ``rner preflight``: the cluster side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import fail, get_config, stdout

k8s_app = typer.Typer(help="Kubernetes objects for serving: the kustomize tree and rendered objects.", no_args_is_help=True)


@k8s_app.command("manifests")
def k8s_manifests(
    out: Annotated[Path, typer.Option(help="Folder of the kustomize tree.")] = Path("manifests"),
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 when the folder is stale.")] = False,
) -> None:
    """Generate the kustomize tree (base + overlays knative, standard-keda, standard-external-keda, cpu-smoke)."""
    from ..k8s.manifests import generate_manifests, stale_manifests

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

    from ..k8s.inference_service import build_objects

    cfg = get_config(ctx)
    try:
        objs = build_objects(cfg.deploy.serving, model)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))


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
    from ..k8s.kubeapi import KubeConfigError
    from ..k8s.rollout import DeployError, build_deploy_patch, deploy, validate_deploy_patch

    cfg = get_config(ctx)
    dep = cfg.deploy
    serving = dep.serving if namespace is None else dep.serving.with_updates(namespace=namespace)
    version = None
    if model is None:
        from ..promotion import Registry

        champion = Registry(cfg.promotion.registry_uri).champion()
        if champion is None:
            raise fail(f"no champion in the registry {cfg.promotion.registry_uri}; run `rner promote` or pass --model")
        model, version = champion["model_uri"], champion["version"]
    if canary is None:
        canary = dep.canary_percent if serving.mode == "knative" else 0
    try:
        if dry_run:
            from ..k8s.schema import ManifestValidationError

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

    from ..k8s import preflight as pf
    from ..k8s.kubeapi import KubeConfigError

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
