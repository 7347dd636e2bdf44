"""Tokenizer, tiny model build/save/reload, corpus reading and model loading errors.

Real code throughout: the tokenizer is trained, the model built, saved, reloaded and run.
"""

from __future__ import annotations

import json
import os
import random

# Before transformers/huggingface_hub are imported: they read it once. There is no hub here.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from reasoning_ner.config import ModelConfig, TinyModelConfig
from reasoning_ner.modeling import (
    CHATML_TEMPLATE,
    SPECIAL_TOKENS,
    THINK_TOKENS,
    ModelLoadError,
    build_tiny_model,
    builtin_corpus,
    corpus_from_prepared,
    count_parameters,
    init_tiny,
    load_model_and_tokenizer,
    resolve_base_model,
    train_tokenizer,
)

# Small enough that building, saving and generating take a fraction of a second.
SMALL = TinyModelConfig(
    vocab_size=500,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
)

ROUND_TRIP_TEXTS = [
    '<think>\nAda Lovelace is a person.\n</think>\n{"entities": {}}',
    '{"entities": {"person": ["Ada Lovelace"]}}',
    "Zoë Müller flew from São Paulo to Kraków — 東京 next! 😀",
    "line one\n\nline three\r\n\ttabbed   spaces  ",
    " leading space, trailing space ",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny-base"
    summary = init_tiny(out, SMALL)
    assert summary["out_dir"] == str(out)
    return out, summary


@pytest.fixture(scope="module")
def saved_tokenizer(tiny_dir):
    return AutoTokenizer.from_pretrained(tiny_dir[0])


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_tokenizer_round_trips_text_exactly(saved_tokenizer, text):
    ids = saved_tokenizer.encode(text, add_special_tokens=True)
    assert saved_tokenizer.decode(ids) == text


def test_special_and_think_tokens_are_single_ids(saved_tokenizer):
    # Special tokens come first, in the declared order; pad and eos are the Qwen choices.
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert saved_tokenizer.encode(token) == [expected_id]
    assert saved_tokenizer.pad_token == "<|endoftext|>"
    assert saved_tokenizer.eos_token == "<|im_end|>"
    think_ids = [saved_tokenizer.convert_tokens_to_ids(t) for t in THINK_TOKENS]
    for token, token_id in zip(THINK_TOKENS, think_ids):
        assert saved_tokenizer.encode(token) == [token_id]
        assert token_id not in saved_tokenizer.all_special_ids
    assert saved_tokenizer.encode("a<think>b") == (
        saved_tokenizer.encode("a") + [think_ids[0]] + saved_tokenizer.encode("b")
    )


def test_skip_special_tokens_keeps_think_tags(saved_tokenizer):
    text = '<think>\nnone\n</think>\n{"entities": {}}<|im_end|>'
    ids = saved_tokenizer.encode(text)
    assert saved_tokenizer.decode(ids, skip_special_tokens=True) == text.removesuffix("<|im_end|>")


def test_chat_template_renders_chatml(saved_tokenizer):
    assert saved_tokenizer.chat_template == CHATML_TEMPLATE
    messages = [{"role": "user", "content": "Text: Ada Lovelace"}]
    rendered = saved_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nText: Ada Lovelace<|im_end|>\n<|im_start|>assistant\n"
    conversation = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    rendered = saved_tokenizer.apply_chat_template(conversation, tokenize=False)
    assert rendered == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"


def test_tokenizer_settings(saved_tokenizer):
    assert saved_tokenizer.padding_side == "left"
    assert saved_tokenizer.model_max_length == SMALL.max_position_embeddings
    assert len(saved_tokenizer) <= SMALL.vocab_size


def test_init_tiny_writes_a_complete_hf_directory(tiny_dir):
    out, summary = tiny_dir
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "README.md"):
        assert (out / name).is_file(), name
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHATML_TEMPLATE
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["do_sample"] is False
    assert generation["max_new_tokens"] == 256
    assert generation["eos_token_id"] == SPECIAL_TOKENS.index("<|im_end|>")
    assert generation["pad_token_id"] == SPECIAL_TOKENS.index("<|endoftext|>")
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0\nlibrary_name: transformers\n")
    assert "randomly initialised" in card and f"{summary['parameters']:,}" in card
    assert summary["corpus_texts"] == len(builtin_corpus())
    assert summary["vocab_size"] == json.loads((out / "config.json").read_text())["vocab_size"]
    # Nothing temporary is left next to the model.
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny-base"]


def test_reload_and_greedy_generate(tiny_dir, saved_tokenizer):
    out, summary = tiny_dir
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert count_parameters(model) == summary["parameters"]
    prompts = [
        saved_tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        for content in ("Text: Ada Lovelace met Alan Turing in London.", "Hi")
    ]
    batch = saved_tokenizer(prompts, return_tensors="pt", padding=True)
    # Left padding: the short prompt is padded at the front, both end at the last column.
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].tolist() == [1, 1]
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=4)
    prompt_len = batch["input_ids"].shape[1]
    assert generated.shape[0] == 2 and prompt_len < generated.shape[1] <= prompt_len + 4
    assert generated[:, prompt_len:].max() < len(saved_tokenizer)


def test_load_model_and_tokenizer_from_local_dir(tiny_dir):
    model, tokenizer = load_model_and_tokenizer(str(tiny_dir[0]), dtype="float32")
    assert model.dtype == torch.float32
    assert tokenizer.pad_token_id == 0 and tokenizer.padding_side == "left"
    assert not model.training


def test_parameter_count_for_default_and_small_configs():
    # Enough distinct text for the BPE trainer to fill the default 6000-token vocabulary.
    rng = random.Random(0)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 9))) for _ in range(3000)]
    tokenizer = train_tokenizer(builtin_corpus() + [" ".join(words)] * 2, vocab_size=6000)
    assert len(tokenizer) == 6000
    default_params = count_parameters(build_tiny_model(tokenizer, TinyModelConfig()))
    assert 4_000_000 < default_params < 6_000_000
    small_tokenizer = train_tokenizer(builtin_corpus(), vocab_size=500)
    small_params = count_parameters(build_tiny_model(small_tokenizer, SMALL))
    assert small_params < default_params / 10


def test_same_seed_same_weights_and_rng_untouched():
    tokenizer = train_tokenizer(builtin_corpus(), vocab_size=400)
    rng_before = torch.random.get_rng_state()
    first = build_tiny_model(tokenizer, SMALL).state_dict()
    second = build_tiny_model(tokenizer, SMALL).state_dict()
    assert torch.equal(rng_before, torch.random.get_rng_state())
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = build_tiny_model(tokenizer, SMALL.model_copy(update={"seed": 1})).state_dict()
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_qwen2_architecture_and_untied_embeddings():
    tokenizer = train_tokenizer(builtin_corpus(), vocab_size=400)
    tied = build_tiny_model(tokenizer, SMALL.model_copy(update={"architecture": "qwen2"}))
    untied = build_tiny_model(
        tokenizer, SMALL.model_copy(update={"architecture": "qwen2", "tie_word_embeddings": False})
    )
    assert type(tied).__name__ == "Qwen2ForCausalLM"
    assert count_parameters(untied) - count_parameters(tied) == len(tokenizer) * SMALL.hidden_size


def test_init_tiny_replaces_and_keeps_old_model_on_failure(tmp_path):
    out = tmp_path / "tiny"
    init_tiny(out, SMALL, corpus=["Extra text about Grace Hopper."])
    first_weights = (out / "model.safetensors").read_bytes()
    summary = init_tiny(out, SMALL.model_copy(update={"seed": 7}))
    assert (out / "model.safetensors").read_bytes() != first_weights
    replaced_weights = (out / "model.safetensors").read_bytes()
    # 4 heads do not divide hidden 30: the build fails and the previous model must survive.
    with pytest.raises(ValueError):
        init_tiny(out, SMALL.model_copy(update={"hidden_size": 30}))
    assert (out / "model.safetensors").read_bytes() == replaced_weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    assert summary["parameters"] > 0


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def _record(dataset, i):
    text = f"{dataset} sentence {i} about Ada Lovelace."
    start = text.index("Ada")
    return {
        "id": f"{dataset}-{i}",
        "text": text,
        "entities": [{"start": start, "end": start + 12, "label": "person", "text": "Ada Lovelace"}],
        "schema": ["person", "location"],
        "dataset": dataset,
        "split": "train",
        "cot": "Ada Lovelace is a person.",
    }


def test_corpus_from_prepared_round_robin_and_limits(tmp_path):
    _write_jsonl(tmp_path / "alpha" / "train.jsonl", [_record("alpha", i) for i in range(3)])
    _write_jsonl(tmp_path / "beta" / "train.jsonl", [_record("beta", 0)])
    _write_jsonl(tmp_path / "mit_movie" / "train.jsonl", [_record("mit_movie", 0)])  # zero-shot
    _write_jsonl(tmp_path / "alpha" / "test.jsonl", [_record("alpha-test", 0)])  # not train

    texts = corpus_from_prepared(tmp_path, limit=3)
    assert [t.split(" sentence ")[0] for t in texts] == ["alpha", "beta", "alpha"]
    assert texts[0].startswith("alpha sentence 0 about Ada Lovelace.\n")
    assert all("Ada Lovelace" in t.split("\n", 1)[1] for t in texts)  # the rendered example follows

    everything = corpus_from_prepared(tmp_path, limit=100)
    assert len(everything) == 4
    assert not any(t.startswith(("mit_movie", "alpha-test")) for t in everything)
    assert corpus_from_prepared(tmp_path, limit=0) == []
    assert corpus_from_prepared(tmp_path / "missing", limit=10) == []
    only_beta = corpus_from_prepared(tmp_path, limit=100, datasets=["beta", "mit_movie"])  # zero-shot stays out
    assert [t.split(" sentence ")[0] for t in only_beta] == ["beta"]


def _contains(haystack: list[int], needle: list[int]) -> bool:
    return any(haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


@pytest.fixture(scope="module")
def answers_tokenizer():
    return train_tokenizer(builtin_corpus(), vocab_size=800, space_before_names="answers")


def test_isolated_space_makes_names_the_same_ids_in_sentence_and_json():
    corpus = builtin_corpus()
    sentence = "Talks between Nikolaus van der Pas and Mexico City ended on 12 March ."
    names = ["Nikolaus van der Pas", "Mexico City", "12 March"]
    merged = train_tokenizer(corpus, vocab_size=800)
    isolated = train_tokenizer(corpus, vocab_size=800, space_before_names="isolated")
    for tok in (merged, isolated):  # both stay lossless
        assert tok.decode(tok(sentence)["input_ids"]) == sentence
    ids = isolated(sentence)["input_ids"]
    assert all(_contains(ids, isolated(name)["input_ids"]) for name in names)
    assert isolated.tokenize(" Pas")[0] == "Ġ"  # the space is its own token before a name...
    assert isolated.tokenize(" van")[0].startswith("Ġ")  # ...but still merged into lowercase words
    # GPT-2 style: inside a sentence a name carries its leading space, in the JSON answer it does not.
    assert not any(_contains(merged(sentence)["input_ids"], merged(name)["input_ids"]) for name in names)
    with pytest.raises(ValueError, match="space_before_names"):
        train_tokenizer(corpus, vocab_size=800, space_before_names="split")


ANSWER_MODE_TEXTS = [
    '{"entities": {"organization": ["EU", "Nikolaus van der Pas"], "person": []}}',
    '["", "x"]', 'a", ", "b', '[" x', '["  y", "  z"]', '[""]', '", "', '["', 'x [" y", " z', "",
]


def test_answers_mode_gives_json_names_their_sentence_ids_and_round_trips(answers_tokenizer):
    answers = answers_tokenizer
    sentence = "Sentence: Talks between Nikolaus van der Pas and Mexico City ended on 12 March ."
    names = ["Nikolaus van der Pas", "Mexico City", "12 March"]
    answer = json.dumps({"entities": {"location": names[1:2], "person": names[:1], "date": names[2:]}})
    ids = answers(sentence)["input_ids"]
    answer_ids = answers(answer)["input_ids"]
    for name in names:  # the ids of " name" in running text, found in the sentence and inside the answer list
        run = answers(" " + name)["input_ids"]
        assert _contains(ids, run) and _contains(answer_ids, run), (name, answers.convert_ids_to_tokens(answer_ids))
    # The inserted space exists only between encode and decode: every text comes back unchanged.
    merged = train_tokenizer(builtin_corpus(), vocab_size=800)
    assert answers.tokenize(" Pas") == merged.tokenize(" Pas")  # running text is tokenized as merged
    for text in [*ANSWER_MODE_TEXTS, sentence, answer]:
        assert answers.decode(answers(text)["input_ids"]) == text, text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='[]", aB', max_size=16))
def test_answers_mode_round_trips_any_text(answers_tokenizer, text):
    assert answers_tokenizer.decode(answers_tokenizer(text)["input_ids"]) == text


def test_init_tiny_uses_prepared_data(tmp_path):
    data = tmp_path / "data"
    _write_jsonl(data / "alpha" / "train.jsonl", [_record("alpha", i) for i in range(5)])
    summary = init_tiny(tmp_path / "tiny", SMALL, data_dir=data)
    assert summary["corpus_texts"] == len(builtin_corpus()) + 5
    _write_jsonl(data / "beta" / "train.jsonl", [_record("beta", i) for i in range(3)])
    only_beta = SMALL.model_copy(update={"tokenizer_datasets": ["beta"], "space_before_names": "isolated"})
    summary = init_tiny(tmp_path / "tiny", only_beta, data_dir=data)
    assert summary["corpus_texts"] == len(builtin_corpus()) + 3
    assert AutoTokenizer.from_pretrained(tmp_path / "tiny").tokenize(" Ada")[0] == "Ġ"  # the setting is saved


def test_load_error_for_unknown_hub_name_offline():
    name = "reasoning-ner-tests/no-such-model"
    with pytest.raises(ModelLoadError) as info:
        load_model_and_tokenizer(name)
    message = str(info.value)
    assert name in message and "HF_HUB_OFFLINE" in message and "local directory" in message


def test_load_error_for_missing_local_path(tmp_path):
    with pytest.raises(ModelLoadError, match="neither an existing directory nor a hub name"):
        load_model_and_tokenizer(str(tmp_path / "no" / "such" / "model"))


def test_load_error_for_a_folder_that_is_not_a_model(tmp_path, tiny_dir):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"is not a Hugging Face model folder: no config.json and no tokenizer_config.json"):
        load_model_and_tokenizer(str(tmp_path))
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((tiny_dir[0] / "config.json").read_text())
    with pytest.raises(ModelLoadError, match=r"half is not a Hugging Face model folder: no tokenizer_config.json \("):
        load_model_and_tokenizer(str(half))


def test_resolve_base_model(tmp_path, tiny_dir):
    missing = tmp_path / "not-built"
    with pytest.raises(ModelLoadError, match=r"run `rner model init-tiny --out .*not-built`"):
        resolve_base_model(ModelConfig(base_model="tiny", tiny_dir=str(missing)))
    assert resolve_base_model(ModelConfig(base_model="tiny", tiny_dir=str(tiny_dir[0]))) == str(tiny_dir[0])
    assert resolve_base_model(ModelConfig(base_model="Qwen/Qwen3-8B-Base")) == "Qwen/Qwen3-8B-Base"


def test_load_fills_in_missing_pad_token_and_chat_template(tiny_dir, tmp_path):
    # A hub-style tokenizer without a pad token or chat template (as many base models ship).
    source = tiny_dir[0]
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in source.iterdir():
        (bare / path.name).write_bytes(path.read_bytes())
    tokenizer_config = json.loads((bare / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template")
    tokenizer_config.update(pad_token=None, padding_side="right")
    (bare / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert AutoTokenizer.from_pretrained(bare).chat_template is None

    _, tokenizer = load_model_and_tokenizer(str(bare))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "left"
    assert tokenizer.chat_template == CHATML_TEMPLATE
