"""RL prompt selection (grpo.rl_selection=partly_right): ranking by the reward's F1, and the
RL dataset built from a pool decoded by a real (untrained, small) model. Fast."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reasoning_ner.config import load_config
from reasoning_ner.prompt import render_answer
from reasoning_ner.records import Entity, NERRecord, read_records, write_jsonl
from reasoning_ner.training.rl_data import RLDataError, build_rl_dataset
from reasoning_ner.training.rl_select import RANKS, rank_records, record_f1
from tests.test_grpo import SMOKE, random_tiny_dir  # noqa: F401  (random_tiny_dir is a fixture)

SCHEMA = ["location", "person"]
ADA = Entity(0, 12, "person", "Ada Lovelace")
LONDON = Entity(21, 27, "location", "London")


def _record(i: int, entities: list[Entity]) -> NERRecord:
    return NERRecord(id=f"r-{i:03d}", text="Ada Lovelace visited London .", entities=entities, schema=SCHEMA,
                     dataset="conll2003", split="train")


def _answer(pairs: dict[str, list[str]]) -> str:
    return "<think>x</think>" + render_answer(pairs, None)


#: (entities, generation, expected rank) for each case
CASES = [
    ([ADA, LONDON], _answer({"person": ["Ada Lovelace"]}), "partly_right"),  # F1 2/3
    ([ADA], _answer({"person": ["London"]}), "wrong_with_gold"),  # F1 0
    ([ADA], "Ada Lovelace is a person", "wrong_with_gold"),  # unparseable: F1 0, as the reward scores it
    # prose before the JSON: the reference parser (the reward's default) fails it, so F1 0; lenient credits it
    ([ADA], "<think>x</think>The answer is " + render_answer({"person": ["Ada Lovelace"]}, None), "wrong_with_gold"),
    ([ADA, LONDON], _answer({"person": ["Ada Lovelace"], "location": ["London"]}), "fully_right"),  # F1 1
    ([], _answer({}), "no_gold"),  # the right (empty) answer, still F1 0: no F1 signal
    ([], _answer({"person": ["Ada Lovelace"]}), "no_gold"),
]


def _pool(copies: int) -> tuple[list[NERRecord], list[str]]:
    """``copies`` records of every case, ids interleaved so no rank is contiguous by id."""
    records, gens = [], []
    for c in range(copies):
        for k, (ents, gen, _) in enumerate(CASES):
            records.append(_record(c * len(CASES) + k, ents))
            gens.append(gen)
    return records, gens


def test_record_f1_is_the_reward_f1():
    from reasoning_ner.rewards import f1_reward

    records, gens = _pool(1)
    golds = [[[e.text, e.label] for e in r.entities] for r in records]
    expected = f1_reward(gens, gold=golds, schema=[SCHEMA] * len(gens))
    assert [record_f1(r, g) for r, g in zip(records, gens)] == pytest.approx(expected)
    assert [round(record_f1(r, g), 3) for r, g in zip(records, gens)] == [0.667, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_ranks_and_stats():
    records, gens = _pool(3)  # per rank: 3 partly right, 9 wrong, 3 fully right, 6 no gold
    expected_rank = {r.id: case[2] for r, case in zip(records, CASES * 3)}
    sel = rank_records(records, gens, total=13, seed=0)
    ranks = [expected_rank[r.id] for r in sel.records]
    # best rank first: all partly right, then wrong-with-gold, then fully right, cut at 13
    assert ranks == ["partly_right"] * 3 + ["wrong_with_gold"] * 9 + ["fully_right"]
    s = sel.stats
    assert s["pool_size"] == 21 and s["selected_total"] == 13 and s["total"] == 13 and s["parser"] == "reference"
    assert s["pool_per_rank"] == {"partly_right": 3, "wrong_with_gold": 9, "fully_right": 3, "no_gold": 6}
    assert s["selected_per_rank"] == {"partly_right": 3, "wrong_with_gold": 9, "fully_right": 1, "no_gold": 0}
    assert s["pool_mean_f1"] == pytest.approx((3 * 2 / 3 + 3 * 1.0) / 21)
    assert tuple(s["pool_per_rank"]) == RANKS
    # the reward's parser decides: lenient credits the answer with prose around its JSON
    lenient = rank_records(records, gens, total=13, seed=0, parser="lenient").stats
    assert lenient["pool_per_rank"] == {"partly_right": 3, "wrong_with_gold": 6, "fully_right": 6, "no_gold": 6}


def test_unparsed_first_ranks_loops_with_the_partly_right():
    """grpo.rl_unparsed_first: the two answers the reward's parser rejects (prose, prose around the
    JSON) join the partly right prompts; the parsed wrong answer stays where it was."""
    records, gens = _pool(3)
    s = rank_records(records, gens, total=13, seed=0, unparsed_first=True).stats
    assert s["pool_unparsed"] == 6 and s["unparsed_first"] is True
    assert s["pool_per_rank"] == {"partly_right": 9, "wrong_with_gold": 3, "fully_right": 3, "no_gold": 6}
    # off (the default), the same pool ranks as before
    assert rank_records(records, gens, total=13, seed=0).stats["pool_per_rank"]["partly_right"] == 3


def test_total_over_the_pool_returns_the_whole_pool():
    records, gens = _pool(2)
    sel = rank_records(records, gens, total=1000, seed=0)
    assert sorted(r.id for r in sel.records) == sorted(r.id for r in records)
    assert sel.stats["selected_per_rank"] == sel.stats["pool_per_rank"]
    assert rank_records(records, gens, total=0, seed=0).records == []
    with pytest.raises(ValueError, match="generations"):
        rank_records(records, gens[:-1], total=1, seed=0)


def test_order_is_seeded_and_independent_of_input_order():
    records, gens = _pool(20)  # 20 partly right, then 60 wrong with gold: the cut at 30 falls inside that rank
    ids = [r.id for r in rank_records(records, gens, total=30, seed=7).records]
    pairs = list(zip(records, gens))
    random.Random(1).shuffle(pairs)
    shuffled = rank_records([p[0] for p in pairs], [p[1] for p in pairs], total=30, seed=7)
    assert [r.id for r in shuffled.records] == ids
    other = [r.id for r in rank_records(records, gens, total=30, seed=8).records]
    assert other != ids  # the seed matters, within each rank
    assert set(other[:20]) == set(ids[:20])  # the 20 partly right prompts are chosen whatever the seed
    assert ids[:20] != sorted(ids[:20])  # shuffled, not left in id order


def test_build_rl_dataset_partly_right_with_a_real_model(random_tiny_dir: Path, prepared_dir: Path,  # noqa: F811
                                                         tmp_path: Path):
    from reasoning_ner.modeling import load_model_and_tokenizer

    from reasoning_ner.training import rl_select

    rl_select._ANSWERS.clear()  # this test checks the memo from empty, whichever tests ran before
    model, tokenizer = load_model_and_tokenizer(str(random_tiny_dir), dtype="float32")
    # lenient: a non-default parser, to see that the selection scores with the reward's
    cfg = load_config(profile="tiny-cpu", overrides=[*SMOKE, "grpo.rl_selection=partly_right", "grpo.rl_pool_factor=4",
                                                     "grpo.reward_parser=lenient"])
    files = [prepared_dir / "conll2003" / "train.jsonl"]
    ds, stats = build_rl_dataset(cfg, files, tokenizer=tokenizer, policy=(model, tokenizer))
    n, factor = cfg.grpo.rl_sample_size, cfg.grpo.rl_pool_factor
    sel = stats["selection"]
    assert sel["method"] == "partly_right" and sel["pool_factor"] == factor == 4
    assert sel["pool_size"] == n * factor == 32 and sel["max_new_tokens"] == cfg.grpo.max_completion_length
    assert sel["parser"] == "lenient"
    assert len(ds) == sel["selected_total"] == stats["sampled_total"] == n == 8
    assert sum(sel["pool_per_rank"].values()) == 32 and sum(sel["selected_per_rank"].values()) == 8
    # an untrained model is wrong everywhere, so the prompts with gold entities come before those without
    assert sel["pool_per_rank"]["wrong_with_gold"] >= 8 and sel["selected_per_rank"]["no_gold"] == 0
    assert all(ds["gold"])
    # the same inputs select the same prompts; random selection is a different, unranked sample
    again, again_stats = build_rl_dataset(cfg, files, tokenizer=tokenizer, policy=(model, tokenizer))
    assert again["id"] == ds["id"]
    # ... decoding the pool once: the second ranking reuses the answers of the same weights, a changed
    # weight decodes again
    assert not sel["answers_reused"] and again_stats["selection"]["answers_reused"]
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight[0, 0] += 1.0
    _, changed_stats = build_rl_dataset(cfg, files, tokenizer=tokenizer, policy=(model, tokenizer))
    assert not changed_stats["selection"]["answers_reused"]
    random_cfg = load_config(profile="tiny-cpu", overrides=SMOKE)
    plain, plain_stats = build_rl_dataset(random_cfg, files, tokenizer=tokenizer, policy=(model, tokenizer))
    assert "selection" not in plain_stats and len(plain) == 8 and plain["id"] != ds["id"]
    # a pool larger than the data is capped by what is available
    big = load_config(profile="tiny-cpu", overrides=[*SMOKE, "grpo.rl_selection=partly_right", "grpo.rl_pool_factor=100000"])
    small = tmp_path / "train-20.jsonl"
    write_jsonl(small, read_records(files[0])[:20])
    _, big_stats = build_rl_dataset(big, [small], policy=(model, tokenizer))
    assert big_stats["selection"]["pool_size"] == 20 and big_stats["sampled_total"] == 8


def test_partly_right_needs_a_policy(prepared_dir: Path):
    cfg = load_config(profile="tiny-cpu", overrides=["grpo.rl_selection=partly_right"])
    with pytest.raises(RLDataError, match="grpo.rl_selection"):
        build_rl_dataset(cfg, [prepared_dir / "conll2003" / "train.jsonl"])
    with pytest.raises(Exception, match="rl_pool_factor"):
        load_config(profile="tiny-cpu", overrides=["grpo.rl_pool_factor=0"])


def test_model_card_names_the_selection():
    from reasoning_ner.training.grpo_report import grpo_card_section

    data = {"sampled_total": 8, "sampled": {"conll2003": 8}, "per_dataset_cap": 10000, "seed": 0,
            "max_prompt_length": 200, "dropped_over_max_prompt_length": {}}
    summary = {"rl_data": data, "versions": {"trl": "1.16"}, "global_steps": 2, "train_seconds": 3.0, "device": "cpu",
               "reward_terms": {"f1_reward": 10.0}, "trl_args": {"temperature": 0.9}}
    assert "RL prompts: 8 (`conll2003` 8), proportional per dataset" in grpo_card_section(summary)  # as before
    data["selection"] = {"pool_size": 32, "selected_per_rank": {"partly_right": 3, "wrong_with_gold": 5}}
    card = grpo_card_section(summary)
    assert "8 (`conll2003` 8), chosen from a pool of 32" in card and "the pool was proportional per dataset" in card


def test_grpo_trainer_selects_with_the_policy_it_trains(random_tiny_dir: Path, prepared_dir: Path,  # noqa: F811
                                                         tmp_path: Path):
    """The GRPO stage hands its freshly loaded policy to the selection (built, not trained)."""
    from reasoning_ner.training.grpo import _build_grpo_trainer

    cfg = load_config(profile="tiny-cpu", overrides=[*SMOKE, "grpo.rl_selection=partly_right", "grpo.rl_pool_factor=4"])
    run = _build_grpo_trainer(cfg, str(random_tiny_dir), [prepared_dir / "conll2003" / "train.jsonl"],
                              tmp_path / "grpo", "cpu", 1, None)
    assert run.data_stats["selection"]["pool_size"] == 32 and len(run.trainer.train_dataset) == 8
    assert run.data_stats["selection"]["selected_per_rank"]["no_gold"] == 0
