"""Assertions and helpers shared by test files (not fixtures)."""

from __future__ import annotations

from pathlib import Path


def assert_exported_model(model_dir: Path, card_needles: tuple[str, ...] = (), card_absent: tuple[str, ...] = ()) -> str:
    """An exported model loads with AutoModelForCausalLM, stops at <|im_end|>, decodes greedily and
    has a model card holding every needle and none of the absent strings; returns the card."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    assert type(AutoModelForCausalLM.from_pretrained(model_dir)).__name__ == "Qwen3ForCausalLM"
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    gen = GenerationConfig.from_pretrained(model_dir)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert tok.convert_tokens_to_ids("<|im_end|>") in eos and gen.do_sample is False
    card = (Path(model_dir) / "README.md").read_text()
    for needle in card_needles:
        assert needle in card, needle
    for absent in card_absent:
        assert absent not in card, absent
    return card


def sentence_of(prompt: str) -> str:
    """The sentence of a rendered ChatML prompt: the user turn's last line in both prompt styles
    (after ``Sentence: `` in the paper's, alone in the compact one)."""
    return prompt.split("<|im_end|>", 1)[0].rsplit("\n", 1)[-1].removeprefix("Sentence: ")
