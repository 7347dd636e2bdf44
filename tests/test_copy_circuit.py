"""The hand-set copy circuit of the tiny model (reasoning_ner.copy_circuit): an untrained model
with it continues a repeated sequence; one without it does not; shapes that cannot carry it fail."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from reasoning_ner.config import TinyModelConfig
from reasoning_ner.modeling import build_tiny_model, builtin_corpus, train_tokenizer
from reasoning_ner.prompt import chatml, render_prompt

# The tiny-cpu shape (hidden 256, 4 layers, 4 heads / 2 KV heads) with a small vocabulary.
SHAPE = TinyModelConfig(vocab_size=1500, max_position_embeddings=256)
SENTENCE = "Turkey says Syria sponsors the PKK , fighting for Kurdish self-rule in southeast Turkey ."


@pytest.fixture(scope="module")
def tokenizer():
    # The sentence's words become whole tokens, as CoNLL words do in the profile's tokenizer (a word
    # split into letters repeats its pieces, and one token of context cannot say where a copy resumes).
    return train_tokenizer(builtin_corpus() + [SENTENCE] * 20, vocab_size=SHAPE.vocab_size, model_max_length=256)


def repeat_accuracy(model, vocab_size: int, length: int = 30, distinct: int | None = None) -> float:
    """Next-token accuracy on the second copy of random token sequences (the first copy is unpredictable);
    ``distinct``: each sequence draws from that many tokens, so most tokens recur within it."""
    gen = torch.Generator().manual_seed(1)
    first = torch.randint(20, vocab_size, (16, length), generator=gen)
    if distinct:
        alphabet = torch.randint(20, vocab_size, (16, distinct), generator=gen)
        first = torch.gather(alphabet, 1, torch.randint(0, distinct, (16, length), generator=gen))
    seq = torch.cat([first, first], dim=1)
    with torch.no_grad():
        predicted = model(seq).logits[:, length:-1].argmax(-1)
    return (predicted == seq[:, length + 1 :]).float().mean().item()


def test_an_untrained_model_with_the_circuit_copies(tokenizer):
    with_circuit = build_tiny_model(tokenizer, SHAPE.model_copy(update={"copy_circuit": True}))
    without = build_tiny_model(tokenizer, SHAPE)
    assert repeat_accuracy(with_circuit, len(tokenizer)) > 0.8
    assert repeat_accuracy(without, len(tokenizer)) < 0.05
    # The two-token head: a copy over 8 recurring tokens mostly continues from the right place (0.55
    # measured with the profile's tokenizer; the one-token head alone scored 0.23 there).
    assert repeat_accuracy(with_circuit, len(tokenizer), distinct=8) > 0.5


def resume_rate(model, vocab_size: int, length: int = 40, slip: int = 15) -> float:
    """A copy of a random sequence repeats its token at ``slip`` once by mistake: how often does the next
    prediction resume the copy (the token after ``slip``) instead of repeating it again (a loop)?"""
    gen = torch.Generator().manual_seed(2)
    first = torch.randint(20, vocab_size, (32, length), generator=gen)
    seq = torch.cat([first, first[:, : slip + 1], first[:, slip : slip + 1]], dim=1)
    with torch.no_grad():
        predicted = model(seq).logits[:, -1].argmax(-1)
    return (predicted == first[:, slip + 1]).float().mean().item()


def test_a_token_repeated_by_mistake_does_not_start_a_loop(tokenizer, monkeypatch):
    """The induction heads' recency penalty: right after ``... A B C C`` the latest ``C`` (one back, whose
    predecessor is ``C``) matches the query as well as the sentence's ``C`` does; only the distance tells
    them apart. Without the penalty the copy repeats ``C`` for ever, as the tiny model's chains did."""
    from reasoning_ner import copy_circuit

    cfg = SHAPE.model_copy(update={"copy_circuit": True})
    assert resume_rate(build_tiny_model(tokenizer, cfg), len(tokenizer)) > 0.9
    monkeypatch.setattr(copy_circuit, "RECENCY_SCALE", 0.0)
    assert resume_rate(build_tiny_model(tokenizer, cfg), len(tokenizer)) < 0.1


def test_every_query_head_grouping_carries_it(tokenizer):
    mha = SHAPE.model_copy(update={"copy_circuit": True, "num_key_value_heads": 4})  # a key/value head each
    assert repeat_accuracy(build_tiny_model(tokenizer, mha), len(tokenizer), distinct=8) > 0.5
    # One key/value head for all: no room for the two-token head, the one-token head still copies.
    mqa = build_tiny_model(tokenizer, mha.model_copy(update={"num_key_value_heads": 1}))
    assert repeat_accuracy(mqa, len(tokenizer)) > 0.8 and repeat_accuracy(mqa, len(tokenizer), distinct=8) < 0.5


@pytest.mark.parametrize("chain", ["Turkey says", "[ Turkey | location ] says"])
def test_it_echoes_the_prompt_sentence_and_resumes_after_a_tag(tokenizer, chain):
    """After a newline or a tag the previous token is not the sentence's, so only the one-token head
    matches; it alone resumes the copy."""
    model = build_tiny_model(tokenizer, SHAPE.model_copy(update={"copy_circuit": True}))
    prompt = chatml(render_prompt(SENTENCE, ["location", "organization", "person"], "compact")) + "<think>\n" + chain
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False)
    continuation = tokenizer.decode(out[0, ids.shape[1] :])
    assert continuation.startswith(" Syria sponsors the PKK"), continuation


def test_same_seed_same_circuit_and_global_rng_untouched(tokenizer):
    cfg = SHAPE.model_copy(update={"copy_circuit": True})
    before = torch.random.get_rng_state()
    first, second = build_tiny_model(tokenizer, cfg).state_dict(), build_tiny_model(tokenizer, cfg).state_dict()
    assert torch.equal(before, torch.random.get_rng_state())
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = build_tiny_model(tokenizer, cfg.model_copy(update={"seed": 1})).state_dict()
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_the_circuit_does_not_depend_on_the_thread_count(tokenizer):
    """The test suite's background trainer builds the model on 1 or 2 threads depending on the load
    (tests/sft_background.py); a float32 QR rounded differently on each, so one seed gave two models."""
    cfg = SHAPE.model_copy(update={"copy_circuit": True})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = build_tiny_model(tokenizer, cfg).state_dict()
        torch.set_num_threads(max(2, threads))
        two = build_tiny_model(tokenizer, cfg).state_dict()
    finally:
        torch.set_num_threads(threads)
    assert [k for k in one if not torch.equal(one[k], two[k])] == []


@pytest.mark.parametrize(
    "update, message",
    [
        ({"num_hidden_layers": 1}, "num_hidden_layers >= 2"),
        ({"num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 64}, "num_attention_heads >= 2"),
        ({"num_attention_heads": 16, "num_key_value_heads": 2}, "head_dim >= 24"),
        ({"architecture": "qwen2"}, "qwen3"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
    ],
)
def test_shapes_that_cannot_carry_it_are_refused(tokenizer, update, message):
    with pytest.raises(ValueError, match=message):
        build_tiny_model(tokenizer, SHAPE.model_copy(update={"copy_circuit": True, **update}))


def test_the_configuration_refuses_a_shape_that_cannot_carry_it():
    """Caught when the configuration loads (a clear error naming the setting), not when a model is built."""
    from reasoning_ner.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="copy_circuit needs num_hidden_layers >= 2"):
        load_config(profile="tiny-cpu", overrides=["model.tiny.num_hidden_layers=1"])
    assert not load_config(profile="tiny-cpu", overrides=["model.tiny.num_hidden_layers=1",
                                                          "model.tiny.copy_circuit=false"]).model.tiny.copy_circuit
