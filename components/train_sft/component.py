from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("train-gpu"), install_kfp_package=False)
def train_sft(
    cot: Input[Dataset],
    prepared: Input[Dataset],
    profile: str,
    base_model: str,
    use_lora: bool,
    epochs: float,
    learning_rate: float,
    max_steps: int,
    workspace_dir: str,
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[HTML],
):
    """Stage 2: CoT tuning with trl's SFTTrainer (loss on `<think>chain</think>answer` only).

    Full fine-tuning (the paper) or LoRA merged at export. Checkpoints go to the workspace (an
    emptyDir on the GPU node in the cluster), so the trainer resumes within the pod. The exported
    model (Hugging Face format, tokenizer, generation config, model card with data lineage and
    licences) is the artifact.

    Args:
        cot: Validated CoT records from synthesize_cot.
        prepared: Prepared datasets (lineage; tokenizer corpus for the tiny model).
        profile: Configuration profile (tiny-cpu, qwen3-1.7b, qwen3-8b).
        base_model: Hub name or path of the base model; empty = the profile's ('tiny' builds the tiny local model).
        use_lora: LoRA (peft) instead of full fine-tuning.
        epochs: Training epochs; 0 = the profile's.
        learning_rate: Peak learning rate; 0 = the profile's.
        max_steps: Stop after this many optimizer steps; 0 = by epochs.
        workspace_dir: Folder for checkpoints (the cluster's scratch workspace, an emptyDir); empty = a temporary folder.
    """
    import tempfile
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.lineage import sft_lineage
    from reasoning_ner.steps import base_model_path, publish_model, report_html, sft_metrics, sft_overrides
    from reasoning_ner.training.sft import train_sft as run_sft

    cfg = resolve_config(profile=profile, overrides=sft_overrides(use_lora, epochs, learning_rate, max_steps))
    work = Path(workspace_dir) / "sft" if workspace_dir else Path(tempfile.mkdtemp())
    base = base_model_path(cfg, base_model, work, Path(prepared.path) / "data")
    lineage = sft_lineage(prepared.path, cot.metadata)
    summary = run_sft(cfg, [Path(cot.path) / "accepted.jsonl"], work, base_model=base, lineage=lineage, progress=False)
    publish_model(work / "model", model.path, lineage)
    model.metadata.update({"stage": "sft", "base_model": base_model or cfg.model.base_model, "steps": summary["steps"]})
    for key, value in sft_metrics(summary).items():
        metrics.log_metric(key, value)
    Path(curves.path).write_text(report_html("SFT", summary, work))
