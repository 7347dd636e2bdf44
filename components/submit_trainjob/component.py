from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from reasoning_ner.images import image


# Over 80 lines only through its docstring: the dashboard's help for each parameter (the code is ~35 lines).
@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def submit_trainjob(
    cot: Input[Dataset],
    prepared: Input[Dataset],
    profile: str,
    base_model: str,
    use_lora: bool,
    epochs: float,
    learning_rate: float,
    max_steps: int,
    num_nodes: int,
    gpus_per_node: int,
    accelerator_type: str,
    node_selector: dict,
    tolerations: list,
    shared_pvc: str,
    shared_dir: str,
    run_id: str,
    namespace: str,
    runtime: str,
    timeout_hours: float,
    poll_seconds: float,
    launcher: str,
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[HTML],
    image: str = "",
):
    """Stage 2 on several GPU nodes: SFT as a Kubeflow Trainer TrainJob instead of inside this pod.

    Same inputs and outputs as train_sft, so the pipeline can use either (dsl.OneOf). This step runs
    on CPU: it stages the CoT records and lineage on the shared ReadWriteMany volume (mounted here at
    `shared_dir`, on every training node at the same path), creates the TrainJob (`accelerate launch`
    with DeepSpeed ZeRO-3 on num_nodes x gpus_per_node GPUs, the train-gpu image, HF token from the
    reasoning-ner-hf Secret, this pod's image pull Secrets), waits for Complete or Failed, and copies
    the exported model from the shared volume into the model artifact. A retried step re-attaches to
    the same TrainJob (its name comes from the run id); a cancelled or timed-out step deletes it.

    Args:
        cot: Validated CoT records from synthesize_cot.
        prepared: Prepared datasets (lineage; tokenizer corpus for the tiny model).
        profile: Configuration profile (tiny-cpu, qwen3-1.7b, qwen3-8b).
        base_model: Hub name or path of the base model; empty = the profile's ('tiny' builds the tiny local model).
        use_lora: LoRA (peft) instead of full fine-tuning.
        epochs: Training epochs; 0 = the profile's.
        learning_rate: Peak learning rate; 0 = the profile's.
        max_steps: Stop after this many optimizer steps; 0 = by epochs.
        num_nodes: Training nodes (pods).
        gpus_per_node: GPUs (= training processes) per node.
        accelerator_type: Extended resource name of the GPUs, e.g. nvidia.com/gpu.
        node_selector: Node selector of the training pods.
        tolerations: Tolerations of the training pods.
        shared_pvc: ReadWriteMany PVC mounted at shared_dir here and on every training node.
        shared_dir: Mount path of shared_pvc.
        run_id: Pipeline run id (names the TrainJob and its folder on the shared volume).
        namespace: Namespace of the TrainJob; empty = this pod's namespace.
        runtime: ClusterTrainingRuntime with a torch ML policy (torch-distributed).
        timeout_hours: Delete the TrainJob and fail after this long.
        poll_seconds: Seconds between status reads.
        launcher: accelerate (DeepSpeed ZeRO-3, full fine-tuning) or torchrun (DDP, e.g. with LoRA).
        image: Training image of the nodes; empty = reasoning_ner.images.image("train-gpu"). The pipeline
            passes that reference as a constant, so the registration's image rewrite (a commit tag or a
            digest) reaches the TrainJob too.
    """
    from pathlib import Path

    from components.submit_trainjob.trainjob_client import in_cluster_namespace, own_pod_pull_secrets, train_on_the_cluster
    from reasoning_ner.config import resolve_config
    from reasoning_ner.k8s.trainjob_step import stage_inputs, step_settings
    from reasoning_ner.lineage import sft_lineage
    from reasoning_ner.steps import base_model_path, report_html, sft_metrics, sft_overrides

    overrides = sft_overrides(use_lora, epochs, learning_rate, max_steps)
    cfg = resolve_config(profile=profile, overrides=overrides)  # fail here, not on the GPU nodes
    lineage = sft_lineage(prepared.path, cot.metadata)
    run = stage_inputs(shared_dir, run_id, {"accepted.jsonl": Path(cot.path) / "accepted.jsonl"}, lineage)
    # tiny: built once on the shared volume, where every node reads it
    base = base_model_path(cfg, base_model, run.root, Path(prepared.path) / "data")
    namespace = namespace or in_cluster_namespace()
    settings = step_settings(
        run, namespace=namespace, profile=profile, base_model=base, overrides=overrides, num_nodes=num_nodes,
        gpus_per_node=gpus_per_node, runtime=runtime, launcher=launcher, shared_pvc=shared_pvc,
        shared_dir=shared_dir, accelerator_type=accelerator_type, node_selector=node_selector,
        tolerations=tolerations, timeout_hours=timeout_hours, image_pull_secrets=own_pod_pull_secrets(namespace),
        image=image,
    )
    summary, result = train_on_the_cluster(settings, run, model.path, lineage, timeout_hours, poll_seconds)
    trainjob = f"{settings.namespace}/{run.name}"
    model.metadata.update({"stage": "sft", "base_model": base_model or cfg.model.base_model, "steps": summary["steps"],
                           "trainjob": trainjob, "nodes": num_nodes, "gpus": num_nodes * gpus_per_node})
    for key, value in {**sft_metrics(summary), "trainjob_seconds": result.seconds}.items():
        metrics.log_metric(key, value)
    heading = f"SFT (TrainJob {trainjob}, {num_nodes} x {gpus_per_node} GPUs)"
    Path(curves.path).write_text(report_html(heading, summary, run.output_dir))
