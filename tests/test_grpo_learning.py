"""Stage 3 learning checks: GRPO moves what its reward asks for, on held-out prompts, against the
SFT checkpoint it started from (tests/conftest.py ``sft_model``: the tiny-cpu profile as `make run`
trains it).

bench/grpo_effects.py measured both experiments over seeds 0, 1 and 2 with exactly this code (the
test imports it) and the tiny-cpu profile's GRPO settings; every bound below holds for all three
seeds with the margin noted (docs/grpo.md has the per-seed numbers). One measured seed runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

#: The measured seed the suite re-runs (the bench ran 0, 1 and 2; all pass these bounds).
TEST_SEED = 0
#: Bounds from bench/results/grpo_effects.json (seeds 0, 1, 2; before = the SFT model: thinking
#: 16.0 tokens, budget 11, over budget 0.53, length term -0.324, format 0.92, schema-valid 0.92, dev F1 0.173,
#: test-sample F1 0.134).
#: length: thinking 10.58 / 10.31 / 10.13, over budget 0.30 / 0.31 / 0.29, length term -0.096 / -0.101 / -0.087,
#: format 0.97 / 0.98 / 0.99.
#: f1_schema: test-sample F1 0.155 / 0.139 / 0.153, schema-valid 1.00 / 0.89 / 1.00; dev F1 0.190 / 0.146 / 0.208
#: and dev reward 2.622 / 2.219 / 2.825 (before 2.352) rose in two seeds of three, so they are not asserted.
MAX_THINK_OVER_BUDGET = 1.5  # mean thinking at most this far above the budget: highest measured -0.42
MIN_THINK_DROP = 1.5  # lowest measured drop 5.42
MAX_OVER_BUDGET_RATE = 0.5  # highest measured 0.31
MIN_LENGTH_TERM_GAIN = 0.12  # lowest measured gain +0.223
FORMAT_TOLERANCE = 0.03  # the format rate rose in every seed (+0.05 to +0.07)
MIN_TEST_F1_GAIN = 0.0  # test-sample F1 rose in every seed: lowest measured gain +0.005 (mean +0.015)
SCHEMA_TOLERANCE = 0.05  # lowest measured change -0.03


@pytest.fixture(scope="module")
def sft_before(grpo_bench: Any, sft_model: dict[str, Any], prepared_dir: Path):
    """The SFT checkpoint on the held-out prompts (greedy), and the length budget derived from it."""
    records = grpo_bench.heldout_records(prepared_dir)
    before, budget = grpo_bench.baseline(sft_model["model_dir"], records)
    return records, before, budget


def test_grpo_length_term_brings_thinking_within_budget(grpo_bench, sft_model, prepared_dir, sft_before, tmp_path):
    """F1 + schema + format + length: the mean thinking length on held-out prompts falls towards the
    budget (the penalty is 0 at the budget) and fewer answers think past it; the format holds."""
    records, before, budget = sft_before
    assert before["parse_rate"] >= 0.8  # the check needs a model that answers
    assert before["over_budget_rate"] >= 0.5  # the budget is below the SFT model's median thinking length
    run = grpo_bench.run_experiment("length", TEST_SEED, sft_model["model_dir"], prepared_dir, records, before, tmp_path)
    after = run["after"]
    assert after["think_tokens"] <= budget + MAX_THINK_OVER_BUDGET, (budget, after)
    assert after["think_tokens"] <= before["think_tokens"] - MIN_THINK_DROP, (before, after)
    assert after["over_budget_rate"] <= MAX_OVER_BUDGET_RATE, (before, after)
    assert after["length_term"] >= before["length_term"] + MIN_LENGTH_TERM_GAIN, (before, after)
    assert after["format_rate"] >= before["format_rate"] - FORMAT_TOLERANCE, (before, after)  # the block is kept


def test_grpo_paper_reward_raises_held_out_f1(grpo_bench, sft_model, prepared_dir, sft_before, tmp_path):
    """F1 + schema (the paper's reward) on prompts the SFT model gets partly right: F1 on the fixed
    300-sentence CoNLL-2003 test sample rises over the SFT start (it did in every measured seed) and
    schema validity on the dev prompts holds."""
    records, before, _ = sft_before
    test_records = grpo_bench.conll_test_sample(prepared_dir)
    before_test = grpo_bench.test_scores(sft_model["model_dir"], test_records)
    run = grpo_bench.run_experiment("f1_schema", TEST_SEED, sft_model["model_dir"], prepared_dir, records, before,
                                    tmp_path, test_records)
    after, after_test = run["after"], run["after_test"]
    assert after_test["micro_f1"] > before_test["micro_f1"] + MIN_TEST_F1_GAIN, (before_test, after_test)
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
