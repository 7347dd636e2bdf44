"""Stage 1: teacher clients, offline teacher, verification, judge, faults over real HTTP, resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest

from reasoning_ner.config import ZERO_SHOT_DATASETS, CoTConfig
from reasoning_ner.cot.client import ChatClient, EndpointError, backoff_delay, parse_chat_response, retry_after_seconds
from reasoning_ner.cot.offline import compact_chain, full_chain, offline_chain, tagged_chain
from reasoning_ner.cot.prompts import parse_judge_score, teacher_prompt
from reasoning_ner.cot.stub_teacher import FaultPlan, StubTeacher, parse_faults, start_stub
from reasoning_ner.cot.synthesize import load_inputs, synthesize
from reasoning_ner.cot.verify import verify
from reasoning_ner.records import Entity, NERRecord, RecordError, read_jsonl, read_records


@contextmanager
def running_stub(stub: StubTeacher):
    """Serve the stub on 127.0.0.1 from a background thread; yields the base URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        box["runner"], box["port"] = loop.run_until_complete(start_stub(stub))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def conll_train(prepared_dir: Path) -> Path:
    return prepared_dir / "conll2003" / "train.jsonl"


def _ids(path: Path) -> list[str]:
    return [row["id"] for row in read_jsonl(path)] if path.exists() else []


# ------------------------------------------------------------------------------ offline teacher


def _rec() -> NERRecord:
    text = "Marie Curie was born in Warsaw ."
    return NERRecord("x", text, [Entity(0, 11, "person", "Marie Curie"), Entity(24, 30, "location", "Warsaw")],
                     ["location", "organization", "person"], "t", "train")


def test_offline_chains_walk_the_schema() -> None:
    assert compact_chain(_rec()) == "Candidates: Marie Curie; Warsaw."
    assert compact_chain(NERRecord("y", "the cat sat", [], ["person"], "t", "train")) == "Candidates: none."
    # Gold spans are always candidates, lower-case and inside capitalized runs too, in sentence order.
    text = "Nikolaus van der Pas told Reuters the cat ate"
    rec = NERRecord("z", text, [Entity(0, 20, "person", "Nikolaus van der Pas"), Entity(37, 40, "animal", "cat")],
                    ["person", "animal"], "t", "train")
    assert compact_chain(rec) == "Candidates: Nikolaus; Nikolaus van der Pas; Pas; Reuters; cat."
    full = full_chain(_rec())
    assert full.index("location:") < full.index("organization:") < full.index("person:")
    assert '"Warsaw" appears after "in" and before "."' not in full  # '.' is not a word
    assert '"Warsaw" appears after "in"' in full and "names a location" in full
    assert "nothing in the sentence refers to an organization" in full


def test_tagged_chain_marks_each_entity_in_place() -> None:
    assert tagged_chain(_rec()) == "[ Marie Curie | person ] was born in [ Warsaw | location ] ."
    assert tagged_chain(NERRecord("y", "the cat sat", [], ["person"], "t", "train")) == "the cat sat"
    # Nested or overlapping spans: the first, longest one is marked; the text is never repeated or lost.
    text = "Bank of England staff"
    rec = NERRecord("z", text, [Entity(8, 15, "location", "England"), Entity(0, 15, "organization", "Bank of England")],
                    ["location", "organization"], "t", "train")
    assert tagged_chain(rec) == "[ Bank of England | organization ] staff"
    assert offline_chain(rec, "tagged") == tagged_chain(rec)
    with pytest.raises(ValueError, match="compact, tagged or full"):
        offline_chain(rec, "terse")


def test_offline_synthesis_accepts_tagged_chains(tmp_path: Path, conll_train: Path) -> None:
    cfg = CoTConfig(chain_style="tagged", max_records_per_dataset=300)
    stats = synthesize([conll_train], tmp_path, cfg, ZERO_SHOT_DATASETS, progress=False)
    assert stats["records"] == 300 and stats["accepted"] >= 295, stats  # a one-word sentence is too short a chain
    assert all(r.cot.replace("[ ", "").replace(" ]", "").count(" | ") == len({(e.start, e.end) for e in r.entities})
               for r in read_records(tmp_path / "accepted.jsonl"))


def test_offline_synthesis_accepts_gold_grounded_chains(tmp_path: Path, conll_train: Path) -> None:
    cfg = CoTConfig(chain_style="compact", max_records_per_dataset=300)
    stats = synthesize([conll_train], tmp_path, cfg, ZERO_SHOT_DATASETS, progress=False)
    assert stats["records"] == 300 and stats["accepted"] == 300
    accepted = read_records(tmp_path / "accepted.jsonl")
    for r in accepted:
        r.validate()
        assert r.cot and r.meta["teacher"] == "offline-gold-v1:compact"
    assert json.loads((tmp_path / "stats.json").read_text())["accept_rate"] == 1.0


# ----------------------------------------------------------------------------------- verification


def test_verify_reasons_are_named() -> None:
    r = _rec()
    good = '{"entities": {"person": ["Marie Curie"], "location": ["Warsaw"]}}'
    assert verify(r, "Marie Curie is a person; Warsaw is a location", good).accepted
    cases = {
        "answer_unparseable": ("Marie Curie, Warsaw", '{"entities": {"person": ["Marie'),
        "label_outside_schema": ("Marie Curie, Warsaw", '{"entities": {"person": ["Marie Curie"], "city": ["Warsaw"]}}'),
        "span_not_in_sentence": ("Marie Curie, Warsaw, Paris", '{"entities": {"person": ["Marie Curie"], "location": ["Warsaw", "Paris"]}}'),
        "entity_not_in_chain": ("Marie Curie is a person", good),
        "chain_too_short": ("ok", good.replace("Warsaw", "Warsaw")),
        "low_gold_agreement": ("nothing here at all", '{"entities": {}}'),
    }
    for reason, (chain, answer) in cases.items():
        v = verify(r, chain, answer, min_chain_words=2)
        assert reason in v.reasons, (reason, v.reasons)
    assert "chain_too_long" in verify(r, "word " * 50 + "Marie Curie Warsaw", good, max_chain_words=10).reasons
    # explain mode does not check agreement with gold
    assert verify(r, "nothing here at all", '{"entities": {}}', mode="explain").accepted


# ------------------------------------------------------------------------------------------ client


def test_retry_after_and_backoff() -> None:
    import email.utils
    import random

    assert retry_after_seconds("2.5") == 2.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(future) <= 31
    rng = random.Random(0)
    delays = [backoff_delay(a, 0.5, 4.0, rng) for a in range(10) for _ in range(20)]
    assert all(0 <= d <= 4.0 for d in delays) and max(delays) > 2.0


def test_reasoning_inline_or_separate() -> None:
    inline = parse_chat_response({"choices": [{"message": {"content": "<think>\nwhy\n</think>\n{}"}}]})
    separate = parse_chat_response({"choices": [{"message": {"content": "{}", "reasoning_content": "why"}}], "usage": {"prompt_tokens": 3}})
    assert (inline.reasoning, inline.content) == ("why", "{}") == (separate.reasoning, separate.content)
    assert separate.prompt_tokens == 3
    with pytest.raises(EndpointError, match="no choices"):
        parse_chat_response({"error": "x"})


def test_judge_score_parsing() -> None:
    assert parse_judge_score("Looks fine.\nScore: 9") == 9.0
    assert parse_judge_score("score: 4 ... on reflection Score = 8.5") == 8.5
    assert parse_judge_score("7/10") == 7.0
    assert parse_judge_score("great chain") is None and parse_judge_score("Score: 42") is None


def test_non_retryable_status_fails_fast(conll_train: Path) -> None:
    async def go(url: str) -> None:
        async with ChatClient(url.replace("/v1", "/nope"), "m", max_retries=3) as client:
            with pytest.raises(EndpointError, match="HTTP 404") as info:
                await client.chat([{"role": "user", "content": "hi"}])
            assert info.value.attempts == 1 and client.retries == 0

    with running_stub(StubTeacher([])) as url:
        asyncio.run(go(url))


def test_unreachable_endpoint_retries_then_gives_up() -> None:
    async def go() -> None:
        async with ChatClient("http://127.0.0.1:9/v1", "m", max_retries=2, backoff_base_s=0.01) as client:
            with pytest.raises(EndpointError, match="gave up after 3 attempts"):
                await client.chat([{"role": "user", "content": "hi"}])
            assert client.retries == 2

    asyncio.run(go())


# ----------------------------------------------------------------------------- faults over HTTP


def test_every_fault_ends_as_a_retry_or_a_reasoned_rejection(tmp_path: Path, conll_train: Path) -> None:
    gold = read_records(conll_train)[:400]
    rates = parse_faults("timeout=0.03,rate_limit=0.1,server_error=0.08,truncated=0.06,hallucinate=0.06,bad_label=0.06,low_judge=0.06")
    stub = StubTeacher(gold, FaultPlan(latency_s=0.002, rates=rates, timeout_sleep_s=3.0, retry_after_s=0.01))
    with running_stub(stub) as url:
        cfg = CoTConfig(teacher="openai", teacher_url=url, judge_url=url, max_records_per_dataset=400,
                        timeout_s=1.0, max_retries=3, concurrency=16)
        stats = synthesize([conll_train], tmp_path, cfg, ZERO_SHOT_DATASETS, progress=False)
    assert stats["records"] == 400  # the run completed: nothing lost
    served = stub.served_faults
    assert all(served[f] > 0 for f in ("timeout", "rate_limit", "server_error", "truncated", "hallucinate", "bad_label"))
    accepted = list(read_jsonl(tmp_path / "accepted.jsonl"))
    rejected = {row["id"]: row for row in read_jsonl(tmp_path / "rejected.jsonl")}
    # transient faults were retried: the affected records have attempts > 1 and were not rejected for them
    retried = [a for a in accepted if a["meta"]["attempts"] > 1]
    assert len(retried) >= served["timeout"] + served["rate_limit"] + served["server_error"] - 15
    assert "teacher_failed" not in stats["rejections_by_reason"]
    # content faults became reasoned rejections
    by_text = {r.text: stub.plan.fault_for(r.text) for r in gold}
    for row in rejected.values():
        fault = by_text[row["record"]["text"]]
        expected = {"truncated": "answer_unparseable", "hallucinate": "span_not_in_sentence",
                    "bad_label": "label_outside_schema", "low_judge": "judge_below_threshold"}.get(fault)
        assert expected in row["reasons"], (fault, row["reasons"])
    reasons = Counter(r for row in rejected.values() for r in row["reasons"])
    assert reasons["judge_below_threshold"] > 0 and reasons["answer_unparseable"] == served["truncated"]
    # accepted chains came both inline and as reasoning_content, and all have a judge score
    assert all(a["cot"] and a["meta"]["judge_score"] == 9 for a in accepted)
    assert stats["tokens"]["prompt"] > 0 and stats["last_run"]["latency_s"]["p99"] > 0


def test_inputs_are_checked(tmp_path: Path, prepared_dir: Path, conll_train: Path) -> None:
    with pytest.raises(RecordError, match="zero-shot evaluation dataset 'mit_movie'"):
        load_inputs([prepared_dir / "mit_movie" / "train.jsonl"], ZERO_SHOT_DATASETS)
    with pytest.raises(RecordError, match="duplicate record id"):
        load_inputs([conll_train, conll_train], ZERO_SHOT_DATASETS)
    with pytest.raises(ValueError, match="no teacher URL"):
        synthesize([conll_train], tmp_path, CoTConfig(teacher="openai"), ZERO_SHOT_DATASETS, progress=False)
    assert len(load_inputs([conll_train], ZERO_SHOT_DATASETS, max_per_dataset=7)) == 7


# ------------------------------------------------------------------------------- crash and resume


def test_sigkill_at_any_moment_then_resume_gives_each_record_once(tmp_path: Path, prepared_dir: Path, data_dir: Path) -> None:
    inputs = [prepared_dir / "conll2003" / "train.jsonl", prepared_dir / "pile_ner" / "train.jsonl"]
    expected = {r.id for r in load_inputs(inputs, ZERO_SHOT_DATASETS, 150)}
    assert len(expected) == 300
    gold = [r for f in inputs for r in read_records(f)]
    out = tmp_path / "cot"
    rner = Path(sys.executable).with_name("rner")
    with running_stub(StubTeacher(gold, FaultPlan(latency_s=0.05))) as url:
        cmd = [str(rner), "--set", "cot.max_records_per_dataset=150", "--set", "cot.concurrency=2", "cot", "synthesize",
               *sum((["-i", str(f)] for f in inputs), []), "--out", str(out), "--teacher-url", url]
        env = {**os.environ, "RNER_DATA_DIR": str(data_dir)}
        for kill_at in (40, 120, 210):  # SIGKILL while records are being written, three times
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                done = sum(p.read_bytes().count(b"\n") for p in (out / "accepted.jsonl", out / "rejected.jsonl") if p.exists())
                if done >= kill_at:
                    break
                time.sleep(0.01)
            assert proc.poll() is None, "the run finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        partial = _ids(out / "accepted.jsonl") + _ids(out / "rejected.jsonl")
        assert 0 < len(set(partial)) < 300
        final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
    ids = _ids(out / "accepted.jsonl") + _ids(out / "rejected.jsonl")
    assert len(ids) == len(set(ids)) == 300 and set(ids) == expected
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records"] == 300 and stats["last_run"]["skipped_already_done"] > 0


def test_teacher_prompt_modes() -> None:
    p = teacher_prompt("Ada met Bob .", ["person"], "reannotate")
    assert "Sentence: Ada met Bob ." in p and "Gold entities" not in p
    e = teacher_prompt("Ada met Bob .", ["person"], "explain", {"person": ["Ada", "Bob"]})
    assert 'Gold entities: {"entities": {"person": ["Ada", "Bob"]}}' in e
    with pytest.raises(ValueError, match="unknown teacher mode"):
        teacher_prompt("x", [], "guess")


def test_sentences_of_evaluation_splits_never_enter_training(tmp_path: Path, prepared_dir: Path, conll_train: Path) -> None:
    from reasoning_ner.validation import find_eval_files, normalize_sentence

    eval_files = find_eval_files(prepared_dir)
    cfg = CoTConfig(chain_style="compact")
    stats = synthesize([conll_train], tmp_path, cfg, ZERO_SHOT_DATASETS, progress=False, eval_files=eval_files)
    # CoNLL-2003 train repeats 554 of its dev/test lines (datelines, scores, "REUTER")
    assert stats["dropped_eval_overlap"] == {"conll2003": 554}
    assert stats["records"] == 14041 - 554
    eval_texts = {normalize_sentence(r["text"]) for f in eval_files for r in read_jsonl(f)}
    assert not any(normalize_sentence(r["text"]) in eval_texts for r in read_jsonl(tmp_path / "accepted.jsonl"))


def test_a_teacher_that_is_not_there_fails_the_command_and_the_next_run_retries(tmp_path: Path, conll_train: Path) -> None:
    """Every request failed: exit 1 naming the URL and the error; the records are asked again by the next run
    (not counted as done), so a run against the teacher once it is up accepts them."""
    import socket

    from typer.testing import CliRunner

    from reasoning_ner.cli import app

    small = tmp_path / "small.jsonl"
    small.write_text("".join(line for _, line in zip(range(6), conll_train.open())))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    out = tmp_path / "cot"
    common = ["--profile", "tiny-cpu", "--set", "cot.max_retries=0", "--set", "cot.judge_url=null"]
    res = CliRunner().invoke(app, [*common, "cot", "synthesize", "-i", str(small), "--teacher-url", dead, "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert f"every teacher request failed (6 records; {dead})" in " ".join(res.output.split())
    assert len(_ids(out / "rejected.jsonl")) == 6, "the failures are on disk"
    with running_stub(StubTeacher(read_records(small), FaultPlan())) as url:
        res = CliRunner().invoke(app, [*common, "cot", "synthesize", "-i", str(small), "--teacher-url", url,
                                       "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(_ids(out / "accepted.jsonl")) == sorted(r.id for r in read_records(small))
    assert _ids(out / "rejected.jsonl") == []
    res = CliRunner().invoke(app, ["--profile", "tiny-cpu", "cot", "synthesize", "-i", str(small),
                                   "--teacher-url", "127.0.0.1:8000/v1", "--out", str(out)])
    assert res.exit_code == 2 and "cot.teacher_url" in res.output
