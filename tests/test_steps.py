"""The training steps' shared helpers (reasoning_ner.steps), which the components are thin over."""

from __future__ import annotations

import json
from pathlib import Path

from reasoning_ner.config import load_config
from reasoning_ner.steps import (base_model_path, grpo_overrides, numeric_metrics, publish_model, report_html,
                                 sft_metrics, sft_overrides)


def test_step_parameters_become_overrides_and_zero_keeps_the_profile() -> None:
    assert sft_overrides(False, 0, 0, 0) == ["sft.finetune=full"]
    cfg = load_config(overrides=sft_overrides(True, 2, 1e-4, 7))
    assert (cfg.sft.finetune, cfg.sft.num_train_epochs, cfg.sft.learning_rate, cfg.sft.max_steps) == ("lora", 2, 1e-4, 7)
    g = load_config(overrides=grpo_overrides(False, True, 8, 0, 3)).grpo
    assert (g.finetune, g.use_vllm, g.num_generations, g.max_steps) == ("full", True, 8, 3)
    assert g.learning_rate == load_config().grpo.learning_rate


def test_model_metrics_and_report(tmp_path: Path) -> None:
    exported = tmp_path / "export"
    exported.mkdir()
    (exported / "config.json").write_text("{}")
    publish_model(exported, tmp_path / "artifact", {"data": {"rev": "abc"}})
    assert json.loads((tmp_path / "artifact" / "lineage.json").read_text()) == {"data": {"rev": "abc"}}
    assert (tmp_path / "artifact" / "config.json").is_file()
    summary = {"steps": 3, "train_loss_first": 2.123456, "train_loss_last": 1.0, "seconds": 4.5, "ok": True, "dir": "x"}
    assert sft_metrics(summary)["train_loss_first"] == 2.1235
    assert numeric_metrics(summary) == {"steps": 3, "train_loss_first": 2.123456, "train_loss_last": 1.0, "seconds": 4.5}
    (tmp_path / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    html = report_html("SFT", summary, tmp_path)
    assert "<h2>SFT</h2>" in html and "data:image/png;base64," in html and '"steps": 3' in html
    assert base_model_path(load_config(), "Qwen/Qwen3-1.7B", tmp_path, tmp_path) == "Qwen/Qwen3-1.7B"
