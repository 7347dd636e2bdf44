from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from reasoning_ner.images import image


# Over 80 lines only through its docstring: the dashboard's help for each parameter (the code is ~35 lines).
@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def submit_grpo_trainjob(
    sft_model: Input[Model],
    prepared: Input[Dataset],
    profile: str,
    group_size: int,
    learning_rate: float,
    max_steps: int,
    use_lora: bool,
    use_vllm: bool,
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
    vllm_runtime: str,
    vllm_gpus: int,
    timeout_hours: float,
    poll_seconds: float,
    launcher: str,
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[HTML],
    image: str = "",
):
    """Stage 3 on several GPU nodes: GRPO as a Kubeflow Trainer TrainJob instead of inside this pod.

    Same inputs and outputs as train_grpo, so the pipeline can use either (dsl.OneOf). This step runs
    on CPU: it stages the SFT model, the RL prompt pool (the training splits of the profile's
    grpo.rl_datasets) and the lineage on the shared ReadWriteMany volume, creates the TrainJob
    (`accelerate launch -m reasoning_ner.training.grpo` with DeepSpeed ZeRO-3 on num_nodes x
    gpus_per_node GPUs), waits for Complete or Failed, and copies the exported policy back into the
    model artifact. With vLLM rollouts in server mode (the paper profiles) the TrainJob names the
    vllm_runtime TrainingRuntime (the chart's multiNode.grpoRuntime), whose `vllm` role runs
    `trl vllm-serve` on its own GPUs before the trainers start; otherwise it uses runtime. A retried
    step re-attaches to the same TrainJob; a cancelled or timed-out step deletes it.

    Args:
        sft_model: The SFT model from train_sft or submit_trainjob.
        prepared: Prepared datasets (the RL prompt pool).
        profile: Configuration profile.
        group_size: Completions per prompt (num_generations); 0 = the profile's.
        learning_rate: Learning rate; 0 = the profile's.
        max_steps: Optimizer steps; 0 = by epochs.
        use_lora: LoRA instead of full fine-tuning.
        use_vllm: Generate rollouts with vLLM (the profile's vllm_mode: server = a role of the TrainJob).
        num_nodes: Training nodes (pods), besides the vLLM server's.
        gpus_per_node: GPUs (= training processes) per node.
        accelerator_type: Extended resource name of the GPUs, e.g. nvidia.com/gpu.
        node_selector: Node selector of the training pods.
        tolerations: Tolerations of the training pods.
        shared_pvc: ReadWriteMany PVC mounted at shared_dir here and on every training node.
        shared_dir: Mount path of shared_pvc.
        run_id: Pipeline run id (names the TrainJob and its folder on the shared volume).
        namespace: Namespace of the TrainJob; empty = this pod's namespace.
        runtime: ClusterTrainingRuntime with a torch ML policy, used without a vLLM server role.
        vllm_runtime: TrainingRuntime with the vLLM server role (the chart's multiNode.grpoRuntime.name).
        vllm_gpus: GPUs of that runtime's server pod (multiNode.grpoRuntime.vllm.gpus).
        timeout_hours: Delete the TrainJob and fail after this long.
        poll_seconds: Seconds between status reads.
        launcher: accelerate (DeepSpeed ZeRO-3, full fine-tuning) or torchrun (DDP, e.g. with LoRA).
        image: Training image of the nodes; empty = reasoning_ner.images.image("train-gpu").
    """
    from pathlib import Path

    from components.submit_trainjob.trainjob_client import in_cluster_namespace, own_pod_pull_secrets, train_on_the_cluster
    from reasoning_ner.config import resolve_config
    from reasoning_ner.k8s.trainer_runtime import VLLMRuntimeSettings
    from reasoning_ner.k8s.trainjob_step import stage_inputs, step_settings
    from reasoning_ner.steps import grpo_overrides, model_lineage, numeric_metrics, report_html

    overrides = grpo_overrides(use_lora, use_vllm, group_size, learning_rate, max_steps)
    cfg = resolve_config(profile=profile, overrides=overrides)  # fail here, not on the GPU nodes
    lineage = model_lineage(sft_model.path)
    data = Path(prepared.path) / "data"
    pool = {f"{name}/train.jsonl": data / name / "train.jsonl" for name in cfg.grpo.rl_datasets}
    run = stage_inputs(shared_dir, run_id, pool, lineage, stage="grpo", sft_model=sft_model.path)
    namespace = namespace or in_cluster_namespace()
    vllm = VLLMRuntimeSettings(name=vllm_runtime, gpus=vllm_gpus, port=cfg.grpo.vllm_server_port,
                               accelerator_resource=accelerator_type)
    settings = step_settings(
        run, namespace=namespace, profile=profile, base_model="", overrides=overrides, num_nodes=num_nodes,
        gpus_per_node=gpus_per_node, runtime=runtime, launcher=launcher, shared_pvc=shared_pvc,
        shared_dir=shared_dir, accelerator_type=accelerator_type, node_selector=node_selector,
        tolerations=tolerations, timeout_hours=timeout_hours, image_pull_secrets=own_pod_pull_secrets(namespace),
        image=image, stage="grpo", vllm=vllm,
    )
    summary, result = train_on_the_cluster(settings, run, model.path, lineage, timeout_hours, poll_seconds)
    trainjob = f"{settings.namespace}/{run.name}"
    model.metadata.update({"stage": "grpo", "trainjob": trainjob, "nodes": num_nodes, "gpus": num_nodes * gpus_per_node,
                           "vllm_server_role": settings.vllm_role})
    for key, value in {**numeric_metrics(summary), "trainjob_seconds": result.seconds}.items():
        metrics.log_metric(key, value)
    heading = f"GRPO (TrainJob {trainjob}, {num_nodes} x {gpus_per_node} GPUs)"
    Path(curves.path).write_text(report_html(heading, summary, run.output_dir / "plots"))
