"""Stage 3 learning checks: GRPO against the SFT checkpoint it started from, on held-out prompts
(tests/conftest.py ``sft_model``: the tiny-cpu profile as `make run` trains it).

bench/grpo_effects.py measured the experiments with exactly this code (the test imports it) and the
tiny-cpu profile's GRPO settings. From the copy-circuit SFT model (2026-12-07) GRPO's effects are
within the noise of the held-out samples, so the checks are that neither reward makes F1, the
format, the schema or the length term worse; the bounds hold for every measured seed (f1_schema:
seeds 0 and 1; length: seed 0; docs/grpo.md) with the margins noted. One measured seed runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

#: The measured seed the suite re-runs.
TEST_SEED = 0
#: Bounds from docs/grpo.md, from the copy-circuit SFT model (before: thinking 36.4 tokens, budget 23,
#: over budget 0.50, length term -0.410, format 0.90, dev F1 0.530, test-sample F1 0.550).
#: length (seed 0, lr 2e-5): thinking 35.6, over budget 0.50, length term -0.409, format 0.91, dev F1 0.540.
#: f1_schema at lr 2e-5: test-sample F1 0.560 / 0.556 (seeds 0, 1), dev F1 0.500 / 0.539: from this start
#: GRPO's F1 effect is within the noise of these samples, so the checks are that nothing gets worse.
#: From the SFT model with the recency penalty (bench/results/grpo_recency.json; before: dev F1 0.596,
#: test-sample F1 0.578): dev F1 +0.054 / +0.039 / +0.043, test-sample F1 -0.011 / -0.001 / +0.003.
MAX_LENGTH_TERM_LOSS = 0.05  # measured +0.001
MAX_OVER_BUDGET_RISE = 0.1  # measured 0.00
FORMAT_TOLERANCE = 0.03  # measured +0.01
MAX_DEV_F1_LOSS = 0.05  # dev is 100 sentences: ~+-0.03 per seed; measured +0.010
#: Test sentences the F1 check reads: 300 moved by up to 0.04 between draws of one setting (a GRPO run
#: from a second SFT draw: -0.026 on 300, -0.013 on 1000); 1000 cost ~15 s more per model.
TEST_SENTENCES = 1000
MAX_TEST_F1_LOSS = 0.03  # F1 on TEST_SENTENCES after >= before - this. Measured (bench/results/grpo_group8.json):
# +0.003 / +0.014 / -0.011 (seeds 0-2 from the recency-penalty SFT model) and -0.013 (seed 0 from the SFT
# model a loaded test machine trained); the test suite's SFT model is a draw of its own (its trainer
# switches threads with the load, tests/sft_background.py), so the margin covers the spread of draws
# From the 1000-step SFT model (the profile since 2026-12-08; 32 GRPO steps, bench/results/grpo_1000steps_compact.json):
# seed 0 -0.019 on these 1000 sentences; -0.009 / +0.001 / +0.000 (seeds 0-2) on all 3,453.
SCHEMA_TOLERANCE = 0.05  # lowest measured change -0.03 (dev-100, seed 0 from the 1000-step SFT model)


@pytest.fixture(scope="module")
def sft_before(grpo_bench: Any, sft_model: dict[str, Any], prepared_dir: Path):
    """The SFT checkpoint on the held-out prompts (greedy), and the length budget derived from it."""
    records = grpo_bench.heldout_records(prepared_dir)
    before, budget = grpo_bench.baseline(sft_model["model_dir"], records)
    return records, before, budget


def test_grpo_length_term_keeps_thinking_format_and_f1(grpo_bench, sft_model, prepared_dir, sft_before, tmp_path):
    """F1 + schema + format + length on held-out prompts. The tagged chain is the sentence itself, so
    there is little thinking to cut; measured, the terms held (length term -0.410 -> -0.409, over
    budget 0.50 -> 0.50, format 0.90 -> 0.91, dev F1 0.530 -> 0.540). Checked: none of them gets
    worse. (From the weaker start with the compact chain the same run cut thinking 16 -> 10 tokens.)"""
    records, before, budget = sft_before
    assert before["parse_rate"] >= 0.8  # the check needs a model that answers
    assert before["over_budget_rate"] >= 0.4  # the budget is below the SFT model's median thinking length
    run = grpo_bench.run_experiment("length", TEST_SEED, sft_model["model_dir"], prepared_dir, records, before, tmp_path)
    after = run["after"]
    assert after["length_term"] >= before["length_term"] - MAX_LENGTH_TERM_LOSS, (before, after)
    assert after["over_budget_rate"] <= before["over_budget_rate"] + MAX_OVER_BUDGET_RISE, (before, after)
    assert after["format_rate"] >= before["format_rate"] - FORMAT_TOLERANCE, (before, after)  # the block is kept
    assert after["micro_f1"] >= before["micro_f1"] - MAX_DEV_F1_LOSS, (before, after)


def test_grpo_paper_reward_keeps_held_out_f1(grpo_bench, sft_model, prepared_dir, sft_before, tmp_path):
    """F1 + schema (the paper's reward) on prompts the SFT model gets partly right: F1 on a fixed
    sample of TEST_SENTENCES CoNLL-2003 test sentences holds against the SFT start (the measured change
    is within noise, -0.013 to +0.014) and schema validity on the dev prompts holds."""
    records, before, _ = sft_before
    test_records = grpo_bench.conll_test_sample(prepared_dir, TEST_SENTENCES)
    before_test = grpo_bench.test_scores(sft_model["model_dir"], test_records)
    run = grpo_bench.run_experiment("f1_schema", TEST_SEED, sft_model["model_dir"], prepared_dir, records, before,
                                    tmp_path, test_records)
    after, after_test = run["after"], run["after_test"]
    assert after_test["micro_f1"] >= before_test["micro_f1"] - MAX_TEST_F1_LOSS, (before_test, after_test)
    assert after["schema_valid_rate"] >= before["schema_valid_rate"] - SCHEMA_TOLERANCE, (before, after)


def test_grpo_lora_exports_the_merged_update(sft_model: dict[str, Any], prepared_dir: Path, tmp_path: Path) -> None:
    """LoRA GRPO from the trained SFT model: the export holds merged weights, no adapters, and only the
    targeted projections moved. Eight steps: the first rollout batches can all score alike (zero
    advantage, zero update; a random model's always do), measured from step 3 on with this seed."""
    import torch
    from transformers import AutoModelForCausalLM

    from reasoning_ner.config import load_config
    from reasoning_ner.training.grpo import train_grpo

    # The rollout settings this was measured with (before tiny-cpu moved to partly-right prompts at 0.6).
    cfg = load_config(profile="tiny-cpu", overrides=["grpo.finetune=lora", "grpo.learning_rate=1e-3",
                                                     "grpo.rl_selection=random", "grpo.temperature=0.9"])
    summary = train_grpo(cfg, sft_model["model_dir"], [prepared_dir / "conll2003" / "train.jsonl"], tmp_path / "grpo-lora",
                         max_steps=8)
    model_dir = Path(summary["model_dir"])
    assert not (model_dir / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(sft_model["model_dir"]).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    assert merged.keys() == base.keys() and not [k for k in merged if "lora" in k]
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    targets = tuple(cfg.sft.lora_target_modules)
    assert changed and all(any(t in k for t in targets) for k in changed), sorted(changed)[:10]
    assert any("q_proj" in k for k in changed)
