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
    import tempfile
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.steps import grpo_overrides, model_lineage, numeric_metrics, publish_model, report_html
    from reasoning_ner.training.grpo import train_grpo as run_grpo

    overrides = grpo_overrides(use_lora, use_vllm, group_size, learning_rate, max_steps)
    cfg = resolve_config(profile=profile, overrides=overrides)
    work = Path(workspace_dir) / "grpo" if workspace_dir else Path(tempfile.mkdtemp())
    data = Path(prepared.path) / "data"
    lineage = model_lineage(sft_model.path)
    summary = run_grpo(cfg, sft_model.path, [data / n / "train.jsonl" for n in cfg.grpo.rl_datasets], work, lineage=lineage)
    publish_model(work / "model", model.path, lineage)
    model.metadata.update({"stage": "grpo"})
    for key, value in numeric_metrics(summary).items():
        metrics.log_metric(key, value)
    Path(curves.path).write_text(report_html("GRPO", summary, work / "plots"))
