"""GRPO reward terms: pure functions, trl's signature, every documented edge case."""

from __future__ import annotations

import functools
import pickle
from types import SimpleNamespace

import pytest

from reasoning_ner.config import load_config
from reasoning_ner.rewards import (
    build_reward_funcs,
    completion_text,
    count_think_tokens,
    f1_reward,
    format_reward,
    gold_pairs,
    length_penalty,
    length_reward,
    reward_breakdown,
    schema_reward,
)

SCHEMA = ["location", "organization", "person"]
GOLD = [["Ada Lovelace", "person"], ["London", "location"]]
GOOD = '<think>\nperson: Ada Lovelace; location: London.\n</think>\n{"entities": {"person": ["Ada Lovelace"], "location": ["London"]}}'
HALF = '<think>\nperson: Ada Lovelace.\n</think>\n{"entities": {"person": ["Ada Lovelace"]}}'
EMPTY = '<think>\nlocation: none; organization: none; person: none.\n</think>\n{"entities": {}}'


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# ------------------------------------------------------------------------------------ inputs


def test_completion_text_handles_plain_and_conversational():
    assert completion_text("abc") == "abc"
    assert completion_text(conv("abc")) == "abc"
    assert completion_text({"role": "assistant", "content": "abc"}) == "abc"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]) == "ab"
    # user turns are not the completion; junk is empty text (scored as a parse failure, never a crash)
    assert completion_text([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]) == "y"
    assert completion_text(None) == ""
    assert completion_text(42) == ""


def test_gold_pairs_accepts_column_dict_and_grouped_forms():
    assert gold_pairs(GOLD) == [("Ada Lovelace", "person"), ("London", "location")]
    assert gold_pairs([("London", "LOCATION")]) == [("London", "location")]
    assert gold_pairs([{"text": "London", "label": "location"}]) == [("London", "location")]
    assert gold_pairs({"person": ["Ada Lovelace"]}) == [("Ada Lovelace", "person")]
    assert gold_pairs(None) == [] and gold_pairs([]) == []


# ---------------------------------------------------------------------------------------- F1


@pytest.mark.parametrize("wrap", [lambda t: t, conv], ids=["plain", "conversational"])
def test_f1_reward_values(wrap):
    comps = [wrap(GOOD), wrap(HALF), wrap("no json here"), wrap('{"entities": {"person": ["Nobody"]}}')]
    rewards = f1_reward(comps, gold=[GOLD] * 4, schema=[SCHEMA] * 4)
    assert rewards[0] == pytest.approx(1.0)
    assert rewards[1] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # P 1, R 1/2
    assert rewards[2] == 0.0  # parse failure
    assert rewards[3] == 0.0
    assert all(isinstance(r, float) for r in rewards)


def test_f1_reward_edge_cases():
    empty_gold: list[list[str]] = []
    rewards = f1_reward(
        [EMPTY, GOOD, EMPTY, '<think>unclosed {"entities": {"person": ["Ada Lovelace"]}}'],
        gold=[empty_gold, empty_gold, GOLD, GOLD],
    )
    assert rewards[0] == 0.0  # empty gold + empty prediction -> 0 (reference safe_div)
    assert rewards[1] == 0.0  # empty gold + predictions -> precision 0
    assert rewards[2] == 0.0  # gold + empty prediction -> recall 0
    assert rewards[3] == 0.0  # unclosed think block is a parse failure


def test_f1_reward_normalizes_and_collapses_duplicates():
    comp = '<think>x</think>{"entities": {"Person": ["ada lovelace", "Ada Lovelace."], "location": ["the London"]}}'
    assert f1_reward([comp], gold=[GOLD]) == [pytest.approx(1.0)]


def test_f1_reward_ignores_invalid_labels_and_counts_out_of_schema_as_wrong():
    gold = [["London", "location"]]
    with_misc = '{"entities": {"location": ["London"], "misc": ["English"]}}'
    outside = '{"entities": {"location": ["London"], "city": ["London"]}}'
    # the reference counts a predicted misc as a false positive; the lenient mode drops it as the paper metric does
    assert f1_reward([with_misc], gold=[gold]) == [pytest.approx(2 * 0.5 * 1 / 1.5)]
    assert f1_reward([with_misc], gold=[gold], parser="lenient") == [pytest.approx(1.0)]
    assert f1_reward([outside], gold=[gold]) == [pytest.approx(2 * 0.5 * 1 / 1.5)]


def test_rewards_need_their_columns():
    with pytest.raises(KeyError, match="gold"):
        f1_reward([GOOD])
    with pytest.raises(KeyError, match="schema"):
        schema_reward([GOOD], gold=[GOLD])
    with pytest.raises(ValueError, match="2 values"):
        f1_reward([GOOD], gold=[GOLD, GOLD])


# ------------------------------------------------------------------------------------ schema


def test_schema_reward_rewards_correct_empty_answer_and_valid_labels_only():
    comps = [EMPTY, GOOD, '{"entities": {"city": ["London"]}}', "garbage", '{"entities": ["London"]}', conv(GOOD)]
    rewards = schema_reward(comps, schema=[SCHEMA] * len(comps), gold=[[]] * len(comps))
    assert rewards == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]


def test_schema_reward_label_matching_is_case_insensitive():
    assert schema_reward(['{"entities": {"PERSON": ["Ada"]}}'], schema=[["person"]]) == [1.0]
    assert schema_reward(['{"entities": {"person": ["Ada"]}}'], schema=[[]]) == [0.0]


# ------------------------------------------------------------------------------------ format


def test_format_reward():
    comps = [
        GOOD,
        EMPTY + "<|im_end|>",  # trailing end-of-turn tolerated
        '{"entities": {}}',  # no think block
        "<think>a</think><think>b</think>{\"entities\": {}}",  # two blocks
        "<think>a</think>{\"entities\": {}} and some prose",  # trailing text (the parser would accept it)
        "<think>a",  # unclosed
        "Sure! <think>a</think>{\"entities\": {}}",  # text before the block
        "<think>a</think>```json\n{\"entities\": {}}\n```",  # fenced answer
        "<think>a</think>{\"entities\": {\"person\": [1]}}",  # non-string span
        conv(GOOD),
    ]
    assert format_reward(comps) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


# ------------------------------------------------------------------------------------ length


def test_length_penalty_shape():
    assert length_penalty(0, 10) == 0.0
    assert length_penalty(10, 10) == 0.0
    assert length_penalty(15, 10) == pytest.approx(-0.5)
    assert length_penalty(20, 10) == pytest.approx(-1.0)
    assert length_penalty(100, 10) == -1.0  # capped
    with pytest.raises(ValueError):
        length_penalty(5, 0)


def test_count_think_tokens_words_and_tokenizer():
    assert count_think_tokens("<think>one two three</think>{}") == 3
    assert count_think_tokens('{"entities": {}}') == 0  # no block, no penalty
    assert count_think_tokens("<think>one two three four") == 4  # unclosed: everything after <think>
    fake_tok = lambda text, add_special_tokens=False: {"input_ids": list(text)}  # noqa: E731 - one id per char
    assert count_think_tokens("<think>abc</think>{}", fake_tok) == 3


def test_count_think_tokens_with_the_tiny_tokenizer(tiny_tokenizer):
    text = "<think>\nperson: Ada Lovelace; location: London.\n</think>\n{}"
    n = count_think_tokens(text, tiny_tokenizer)
    assert n == len(tiny_tokenizer("person: Ada Lovelace; location: London.", add_special_tokens=False)["input_ids"])
    assert n > 0


def test_length_reward_and_logging():
    logged = {}
    comps = ["<think>" + " ".join(["w"] * n) + "</think>{\"entities\": {}}" for n in (2, 4, 6, 8)]
    rewards = length_reward(comps, budget=4, log_metric=lambda k, v: logged.__setitem__(k, v))
    assert rewards == [0.0, 0.0, pytest.approx(-0.5), pytest.approx(-1.0)]
    assert logged["completions/think_tokens"] == pytest.approx(5.0)
    bound = functools.partial(length_reward, budget=4)
    assert bound([conv(comps[2])]) == [pytest.approx(-0.5)]


def test_f1_reward_logs_parse_rate():
    logged = {}
    f1_reward([GOOD, "nope"], gold=[GOLD, GOLD], log_metric=lambda k, v: logged.__setitem__(k, v))
    assert logged == {"completions/parse_rate": 0.5}


# ------------------------------------------------------------------------------ breakdown/build


def test_reward_breakdown_and_total():
    b = reward_breakdown(GOOD, GOLD, SCHEMA, budget=2)
    assert b.parsed and b.f1 == pytest.approx(1.0) and b.schema == 1.0 and b.format == 1.0
    assert b.think_tokens == 5 and b.length == pytest.approx(-1.0)
    assert b.total() == pytest.approx(11.0)  # paper weights 10 x F1 + 1 x schema
    assert b.total(10, 1, 1, 2) == pytest.approx(10.0)
    e = reward_breakdown(EMPTY, [], SCHEMA)
    assert (e.f1, e.schema, e.length) == (0.0, 1.0, 0.0)
    assert e.total() == 1.0  # the correct empty answer earns the schema reward only


def test_build_reward_funcs_from_config():
    cfg = load_config(profile="tiny-cpu")
    funcs, weights = build_reward_funcs(cfg.grpo)
    assert [f.__name__ for f in funcs] == ["f1_reward", "schema_reward"]
    assert weights == [10.0, 1.0] and [f.keywords["parser"] for f in funcs] == ["reference", "reference"]
    lenient, _ = build_reward_funcs(cfg.grpo.model_copy(update={"reward_parser": "lenient"}))
    assert lenient[0](["Sure: " + GOOD], gold=[GOLD]) == [pytest.approx(1.0)] != funcs[0](["Sure: " + GOOD], gold=[GOLD])

    g = SimpleNamespace(reward_parser="reference", reward_f1_weight=10, reward_schema_weight=1, reward_format_weight=0.5, reward_length_weight=2, think_token_budget=8)
    funcs, weights = build_reward_funcs(g)
    assert len(funcs) == 4 and weights == [10.0, 1.0, 0.5, 2.0]
    assert isinstance(funcs[3], functools.partial) and funcs[3].keywords["budget"] == 8
    pickle.dumps(funcs)  # picklable: accelerate / multiprocessing may need it


def test_build_reward_funcs_warns_about_length_without_format(caplog):
    g = SimpleNamespace(reward_parser="reference", reward_f1_weight=10, reward_schema_weight=1, reward_format_weight=0, reward_length_weight=2, think_token_budget=8)
    with caplog.at_level("WARNING", logger="reasoning_ner.rewards"):
        build_reward_funcs(g)
    assert "dropping the <think> block" in caplog.text
    caplog.clear()
    g.reward_format_weight = 1
    with caplog.at_level("WARNING", logger="reasoning_ner.rewards"):
        build_reward_funcs(g)
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reward_length_weight": 1.0, "think_token_budget": None}, "think_token_budget"),
        ({"reward_f1_weight": -1.0}, ">= 0"),
        ({"reward_f1_weight": 0.0, "reward_schema_weight": 0.0}, "at least one"),
    ],
)
def test_build_reward_funcs_rejects_bad_weights(changes, message):
    g = {"reward_parser": "reference", "reward_f1_weight": 10.0, "reward_schema_weight": 1.0, "reward_format_weight": 0.0, "reward_length_weight": 0.0, "think_token_budget": None}
    g.update(changes)
    with pytest.raises(ValueError, match=message):
        build_reward_funcs(SimpleNamespace(**g))


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from reasoning_ner.modeling import builtin_corpus, train_tokenizer

    return train_tokenizer(builtin_corpus(), vocab_size=500, model_max_length=256)
