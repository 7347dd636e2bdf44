from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from reasoning_ner.images import image


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
    the exported model from the shared volume into the model artifact. A retried step re-attaches to the same TrainJob (its name
    comes from the run id); a cancelled or timed-out step deletes it.

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
    import base64
    import json
    import shutil
    import uuid
    from pathlib import Path

    from components.submit_trainjob.trainjob_client import in_cluster_namespace, own_pod_pull_secrets, run_trainjob
    from reasoning_ner.config import load_config
    from reasoning_ner.k8s.trainjob import TrainJobSettings, build_trainjob, trainjob_name

    overrides = [f"sft.finetune={'lora' if use_lora else 'full'}"]
    overrides += [f"sft.num_train_epochs={epochs}"] if epochs > 0 else []
    overrides += [f"sft.learning_rate={learning_rate}"] if learning_rate > 0 else []
    overrides += [f"sft.max_steps={max_steps}"] if max_steps > 0 else []
    cfg = load_config(profile=profile, overrides=overrides)  # fail here, not on the GPU nodes
    name = trainjob_name(run_id or uuid.uuid4().hex[:12])
    root = Path(shared_dir) / "trainjobs" / name
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(cot.path) / "accepted.jsonl", data_dir / "accepted.jsonl")
    lineage = {"data": json.loads((Path(prepared.path) / "lineage.json").read_text()), "cot": dict(cot.metadata)}
    (root / "lineage.json").write_text(json.dumps(lineage, indent=2))
    base = base_model or cfg.model.base_model
    if base == "tiny":
        from reasoning_ner.modeling import init_tiny

        tiny_dir = root / "tiny-base"
        if not (tiny_dir / "config.json").is_file():
            init_tiny(tiny_dir, cfg.model.tiny, data_dir=Path(prepared.path) / "data", prompt_cfg=cfg.prompt)
        base = str(tiny_dir)
    namespace = namespace or in_cluster_namespace()
    settings = TrainJobSettings(
        name=name, namespace=namespace, num_nodes=num_nodes, gpus_per_node=gpus_per_node,
        runtime=runtime, launcher=launcher, profile=profile, data_files=[str(data_dir / "accepted.jsonl")], output_dir=str(root / "out"),
        base_model=base, overrides=overrides, lineage_file=str(root / "lineage.json"), shared_pvc=shared_pvc,
        shared_mount=shared_dir, accelerator_resource=accelerator_type, node_selector=dict(node_selector),
        tolerations=list(tolerations), active_deadline_seconds=max(1, int(timeout_hours * 3600)),
        # Per node, scaled like the single-pod GPU step (8 CPUs and 64 GB per GPU); /dev/shm a quarter.
        cpu_per_node=str(8 * gpus_per_node), memory_per_node=f"{64 * gpus_per_node}Gi",
        shm_size=f"{16 * gpus_per_node}Gi",
        labels={"reasoning-ner.io/trainjob": name},
        # The run's ServiceAccount gave this pod its pull Secrets; the training image needs the same.
        image_pull_secrets=own_pod_pull_secrets(namespace),
        **({"image": image} if image else {}),
    )
    obj = build_trainjob(settings)
    (root / "trainjob.json").write_text(json.dumps(obj, indent=2))
    result = run_trainjob(obj, timeout_s=timeout_hours * 3600, poll_s=poll_seconds)
    (root / "trainjob-result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))

    out = root / "out"
    summary = json.loads((out / "summary.json").read_text())
    shutil.copytree(out / "model", model.path, dirs_exist_ok=True)
    (Path(model.path) / "lineage.json").write_text(json.dumps(lineage, indent=2))
    model.metadata.update({"stage": "sft", "base_model": base_model or cfg.model.base_model, "steps": summary["steps"],
                           "trainjob": f"{settings.namespace}/{name}", "nodes": num_nodes,
                           "gpus": num_nodes * gpus_per_node})
    metrics.log_metric("steps", summary["steps"])
    metrics.log_metric("train_loss_first", round(summary["train_loss_first"], 4))
    metrics.log_metric("train_loss_last", round(summary["train_loss_last"], 4))
    metrics.log_metric("seconds", summary["seconds"])
    metrics.log_metric("trainjob_seconds", result.seconds)
    pngs = sorted(out.glob("*.png"))
    images = "".join(f"<h3>{p.stem}</h3><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'/>"
                     for p in pngs)
    Path(curves.path).write_text(
        f"<html><body><h2>SFT (TrainJob {settings.namespace}/{name}, {num_nodes} x {gpus_per_node} GPUs)</h2>"
        f"<pre>{json.dumps(summary, indent=2, default=str)}</pre>{images}</body></html>")
