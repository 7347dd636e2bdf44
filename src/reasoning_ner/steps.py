"""What the pipeline's training steps share (``components/train_sft``, ``train_grpo``, ``submit_trainjob``):
the step parameters as config overrides, the tiny base model, the exported model with its lineage,
the dashboard metrics and the HTML report. The components stay thin typed functions over these.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

from .config import Config


def sft_overrides(use_lora: bool, epochs: float, learning_rate: float, max_steps: int) -> list[str]:
    """The SFT step's parameters as ``--set`` overrides; 0 keeps the profile's value."""
    overrides = [f"sft.finetune={'lora' if use_lora else 'full'}"]
    overrides += [f"sft.num_train_epochs={epochs}"] if epochs > 0 else []
    overrides += [f"sft.learning_rate={learning_rate}"] if learning_rate > 0 else []
    overrides += [f"sft.max_steps={max_steps}"] if max_steps > 0 else []
    return overrides


def grpo_overrides(use_lora: bool, use_vllm: bool, group_size: int, learning_rate: float, max_steps: int) -> list[str]:
    """The GRPO step's parameters as ``--set`` overrides; 0 keeps the profile's value."""
    overrides = [f"grpo.finetune={'lora' if use_lora else 'full'}", f"grpo.use_vllm={str(use_vllm).lower()}"]
    overrides += [f"grpo.num_generations={group_size}"] if group_size > 0 else []
    overrides += [f"grpo.learning_rate={learning_rate}"] if learning_rate > 0 else []
    overrides += [f"grpo.max_steps={max_steps}"] if max_steps > 0 else []
    return overrides


def base_model_path(cfg: Config, base_model: str, work: Path, data_dir: Path) -> str:
    """The base model to tune: ``base_model`` or the profile's; ``tiny`` is built once under ``work``."""
    from .modeling import init_tiny

    base = base_model or cfg.model.base_model
    if "://" in base:  # a registry copy (the refresh pipeline starts from the champion): fetched once under ``work``
        return fetch_model(base, work / "start-model")
    if base != "tiny":
        return base
    tiny_dir = work / "tiny-base"
    if not (tiny_dir / "config.json").is_file():
        init_tiny(tiny_dir, cfg.model.tiny, data_dir=data_dir, prompt_cfg=cfg.prompt)
    return str(tiny_dir)


def fetch_model(uri: str, dest: Path) -> str:
    """Copy the model folder at ``uri`` (any fsspec URI: s3://...) to ``dest``; transformers loads local folders only."""
    import fsspec

    if (dest / "config.json").is_file():
        return str(dest)
    fs, root = fsspec.core.url_to_fs(uri)
    if not fs.exists(f"{root.rstrip('/')}/config.json"):
        raise FileNotFoundError(f"{uri} is not a model folder (no config.json): the start model cannot be loaded")
    dest.mkdir(parents=True, exist_ok=True)
    fs.get(root.rstrip("/") + "/", str(dest), recursive=True)
    return str(dest)


def model_lineage(model_dir: str | Path) -> dict[str, Any]:
    """The lineage a model folder carries (``lineage.json`` beside the weights); {} when it has none."""
    path = Path(model_dir) / "lineage.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def publish_model(exported: Path, model_dir: str | Path, lineage: dict[str, Any]) -> None:
    """Copy an exported model directory to the step's output artifact, with its lineage next to it."""
    shutil.copytree(exported, model_dir, dirs_exist_ok=True)
    (Path(model_dir) / "lineage.json").write_text(json.dumps(lineage, indent=2))


def sft_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The dashboard metrics of an SFT run's summary."""
    return {
        "steps": summary["steps"],
        "train_loss_first": round(summary["train_loss_first"], 4),
        "train_loss_last": round(summary["train_loss_last"], 4),
        "seconds": summary["seconds"],
    }


def numeric_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """Every number of a run's summary (booleans are not metrics)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def report_html(heading: str, summary: dict[str, Any], png_dir: Path) -> str:
    """A training step's HTML artifact: the summary and every PNG curve of ``png_dir``, embedded."""
    images = "".join(f"<h3>{p.stem}</h3><img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'/>"
                     for p in sorted(png_dir.glob("*.png")))
    return (f"<html><body><h2>{heading}</h2>"
            f"<pre>{json.dumps(summary, indent=2, default=str)}</pre>{images}</body></html>")
