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
    import base64
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from reasoning_ner.config import load_config
    from reasoning_ner.modeling import init_tiny
    from reasoning_ner.training.sft import train_sft as run_sft

    overrides = [f"sft.finetune={'lora' if use_lora else 'full'}"]
    overrides += [f"sft.num_train_epochs={epochs}"] if epochs > 0 else []
    overrides += [f"sft.learning_rate={learning_rate}"] if learning_rate > 0 else []
    overrides += [f"sft.max_steps={max_steps}"] if max_steps > 0 else []
    cfg = load_config(profile=profile, overrides=overrides)
    work = Path(workspace_dir) / "sft" if workspace_dir else Path(tempfile.mkdtemp())
    data = Path(prepared.path) / "data"
    base = base_model or cfg.model.base_model
    if base == "tiny":
        tiny_dir = work / "tiny-base"
        if not (tiny_dir / "config.json").is_file():
            init_tiny(tiny_dir, cfg.model.tiny, data_dir=data, prompt_cfg=cfg.prompt)
        base = str(tiny_dir)
    lineage = {"data": json.loads((Path(prepared.path) / "lineage.json").read_text()), "cot": dict(cot.metadata)}
    summary = run_sft(cfg, [Path(cot.path) / "accepted.jsonl"], work, base_model=base, lineage=lineage, progress=False)
    shutil.copytree(work / "model", model.path, dirs_exist_ok=True)
    (Path(model.path) / "lineage.json").write_text(json.dumps(lineage, indent=2))
    model.metadata.update({"stage": "sft", "base_model": base_model or cfg.model.base_model, "steps": summary["steps"]})
    metrics.log_metric("steps", summary["steps"])
    metrics.log_metric("train_loss_first", round(summary["train_loss_first"], 4))
    metrics.log_metric("train_loss_last", round(summary["train_loss_last"], 4))
    metrics.log_metric("seconds", summary["seconds"])
    pngs = sorted(work.glob("*.png"))
    images = "".join(f"<h3>{p.stem}</h3><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'/>" for p in pngs)
    Path(curves.path).write_text(f"<html><body><h2>SFT</h2><pre>{json.dumps(summary, indent=2, default=str)}</pre>{images}</body></html>")
