"""Stage 2 learning checks on the tiny-cpu profile, as `make run` trains it: SFT lowers the
training loss, and the trained model answers parseably for far more held-out CoNLL-2003 test
sentences than the untrained one and finds entities, with floors set from the measured seeds
(not from the looser tiny-cpu promotion gate).

The session fixture ``sft_model`` (tests/conftest.py) trains seed 0 of bench/sft_learning.py's
recipe; the bench measured seeds 0, 1 and 2 (docs/training.md, bench/results/sft_learning.json)
and every bound below holds for all three with the margin noted. The training mechanics
(masking, loss, LoRA, resume, ...) are tested on a micro model in tests/test_sft.py.
"""

from __future__ import annotations

import json
from typing import Any

from reasoning_ner.config import load_config
from reasoning_ner.records import read_jsonl
from tests.checks import assert_exported_model

# Seeds 0 / 1 / 2 measured (docs/training.md, bench/results/sft_800steps.json; the copy circuit with its
# recency penalty and the tagged chain, 800 steps): loss drop 7.30 / 7.28 / 7.63, parse 0.94 / 0.905 /
# 0.905 (untrained 0 in every seed), F1 0.542 / 0.527 / 0.517. At 700 steps: 7.30 / 7.15 / 7.56,
# 0.93 / 0.895 / 0.915, 0.552 / 0.538 / 0.539.
# Each floor is the lowest of the three seeds minus a stated margin for run-to-run variation of the
# CPU kernels; the test trains seed 0.
# Measured: bench/results/sft_1000steps_compact.json (the profile since 2026-12-08).
MIN_LOSS_DROP = 6.0  # loss at the first logged step minus loss at the last: lowest seed 7.17, margin 1.17 (noisy per batch)
MIN_PARSE_RATE = 0.85  # lowest seed 0.92, margin 0.07 (a parse failure is a repetition loop, a threshold effect)
MIN_PARSE_GAIN = 0.85  # trained minus untrained parse rate: lowest seed 0.92 - 0, margin 0.07
MIN_F1 = 0.5  # lowest seed 0.583, margin 0.083


def test_recipe_is_the_profile_make_run_trains(sft_model: dict[str, Any]) -> None:
    """The checks below are about the shipped defaults, not a test-only configuration."""
    trained_with = sft_model["cfg"]
    shipped = load_config(profile="tiny-cpu")
    assert trained_with.sft.model_dump(exclude={"save_steps"}) == shipped.sft.model_dump(exclude={"save_steps"})
    assert trained_with.cot == shipped.cot and trained_with.data.train_datasets == shipped.data.train_datasets
    assert trained_with.model.tiny == shipped.model.tiny  # the tokenizer's "answers" mode, the copy circuit, the shape
    assert trained_with.model.tiny.copy_circuit and trained_with.cot.chain_style == "tagged"


def test_sft_lowers_training_loss(sft_model: dict[str, Any]) -> None:
    s = sft_model["summary"]
    assert s["steps"] == sft_model["cfg"].sft.max_steps
    assert s["train_loss_first"] - s["train_loss_last"] >= MIN_LOSS_DROP, s


def test_trained_model_answers_parseably_and_finds_entities(sft_model: dict[str, Any]) -> None:
    before, after = sft_model["untrained"], sft_model["trained"]
    assert after["n"] == len(sft_model["eval_records"]) == 200
    assert after["parse_rate"] >= MIN_PARSE_RATE, after
    assert after["parse_rate"] - before["parse_rate"] >= MIN_PARSE_GAIN, (before, after)
    assert after["f1"] > MIN_F1, after


def test_exported_model_loads_with_card_and_curves(sft_model: dict[str, Any]) -> None:
    model_dir, out = sft_model["model_dir"], sft_model["output_dir"]
    # tiny-cpu trains on CoNLL-2003 only: its research-only terms, no CC BY-NC claim.
    assert_exported_model(model_dir, ("## Base model", str(sft_model["base_dir"]), "research use only",
                                      "| learning_rate | 0.002 |", "| train_loss_last |", "md5", "accepted.jsonl",
                                      "bench/sft_learning.py RECIPE"), card_absent=("CC BY-NC",))
    history = json.loads((out / "log_history.json").read_text())
    assert sum("loss" in e for e in history) >= 20
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "summary.json").read_text())["model_dir"] == str(model_dir)
    # The offline teacher's tagged chain over CoNLL-2003's first training sentence.
    assert next(iter(read_jsonl(sft_model["train_file"])))["cot"] == "[ EU | organization ] rejects German call to boycott British lamb ."


def test_cpu_decoding_that_drops_finished_rows_equals_generate(sft_model: dict[str, Any]) -> None:
    """The evaluation's CPU loop removes a row (and its cache) once it stops; on the trained model, whose
    answers stop at many different lengths and sometimes loop to the limit, it yields exactly what
    transformers ``generate`` yields for the same batches."""
    from reasoning_ner.inference import TransformersEngine
    from reasoning_ner.modeling import load_model_and_tokenizer
    from reasoning_ner.training.generate import record_prompts

    model, tok = load_model_and_tokenizer(str(sft_model["model_dir"]))
    prompts = record_prompts(sft_model["eval_records"][:96], sft_model["cfg"].prompt)
    engine = TransformersEngine.for_model(model, tok, batch_size=32)
    assert engine._prunes_finished_rows()
    pruned = engine.generate(prompts, 128)
    engine._prunes_finished_rows = lambda: False  # the stock path, for reference
    stock = engine.generate(prompts, 128)
    assert [(g.text, g.completion_tokens, g.finish_reason) for g in pruned] == [
        (g.text, g.completion_tokens, g.finish_reason) for g in stock]
    assert len({g.completion_tokens for g in stock}) > 10, "rows stop at many lengths, so rows were dropped"
