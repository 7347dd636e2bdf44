from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("train-gpu"), install_kfp_package=False)
def train_grpo(
    sft_model: Input[Model],
    prepared: Input[Dataset],
    profile: str,
    group_size: int,
    learning_rate: float,
    max_steps: int,
    use_lora: bool,
    use_vllm: bool,
    workspace_dir: str,
    model: Output[Model],
    metrics: Output[Metrics],
    curves: Output[HTML],
):
    """Stage 3: reasoning enhancement with trl's GRPOTrainer; reward = 10 x F1 + 1 x schema.

    Starts from the SFT model; RL prompts are sampled proportionally from the training splits of
    the configured RL datasets (zero-shot evaluation sets are never used). Loss dr_grpo, clip
    0.2/0.28, KL 0.04 by default (the paper's settings for the GPU profiles).

    Args:
        sft_model: The SFT model from train_sft.
        prepared: Prepared datasets (the RL prompt pool).
        profile: Configuration profile.
        group_size: Completions per prompt (num_generations); 0 = the profile's.
        learning_rate: Learning rate; 0 = the profile's.
        max_steps: Optimizer steps; 0 = by epochs.
        use_lora: LoRA instead of full fine-tuning.
        use_vllm: Generate rollouts with vLLM (GPU only).
        workspace_dir: Folder for checkpoints (the cluster's scratch workspace, an emptyDir); empty = a temporary folder.
    """
    import base64
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from reasoning_ner.config import load_config
    from reasoning_ner.training.grpo import train_grpo as run_grpo

    overrides = [f"grpo.finetune={'lora' if use_lora else 'full'}", f"grpo.use_vllm={str(use_vllm).lower()}"]
    overrides += [f"grpo.num_generations={group_size}"] if group_size > 0 else []
    overrides += [f"grpo.learning_rate={learning_rate}"] if learning_rate > 0 else []
    overrides += [f"grpo.max_steps={max_steps}"] if max_steps > 0 else []
    cfg = load_config(profile=profile, overrides=overrides)
    work = Path(workspace_dir) / "grpo" if workspace_dir else Path(tempfile.mkdtemp())
    data = Path(prepared.path) / "data"
    lineage_file = Path(sft_model.path) / "lineage.json"
    lineage = json.loads(lineage_file.read_text()) if lineage_file.is_file() else {}
    summary = run_grpo(cfg, sft_model.path, [data / n / "train.jsonl" for n in cfg.grpo.rl_datasets], work, lineage=lineage)
    shutil.copytree(work / "model", model.path, dirs_exist_ok=True)
    (Path(model.path) / "lineage.json").write_text(json.dumps(lineage, indent=2))
    model.metadata.update({"stage": "grpo"})
    for key, value in summary.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    pngs = sorted((work / "plots").glob("*.png"))
    images = "".join(f"<h3>{p.stem}</h3><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'/>" for p in pngs)
    Path(curves.path).write_text(f"<html><body><h2>GRPO</h2><pre>{json.dumps(summary, indent=2, default=str)}</pre>{images}</body></html>")
