from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def harvest_traffic(
    prepared: Input[Dataset],
    profile: str,
    log_root: str,
    since: str,
    until: str,
    budget: int,
    teacher_url: str,
    teacher_model: str,
    judge_url: str,
    judge_threshold: float,
    cot: Output[Dataset],
    heldout: Output[Dataset],
    stats: Output[Metrics],
):
    """Curate: a window of logged traffic becomes a validated CoT training set (docs/flywheel.md).

    Reads the payload sink's date-partitioned records of the window, counts and skips bad lines by
    reason, deduplicates, drops every sentence of an evaluation split (zero-shot and supervised),
    samples up to the budget (uncertain first: parse errors, ungrounded spans, disagreeing samples;
    then balanced over label types), and has the teacher (+ judge) re-annotate them with stage 1's
    checks. A seeded slice is held out for evaluation; the rest passes the validation gate or the
    step fails. An empty window fails the step with a message saying what was read and skipped.
    The teacher API key comes from the RNER_TEACHER_API_KEY environment variable (a Secret).

    Args:
        prepared: Prepared datasets from fetch_data (their evaluation splits are excluded).
        profile: Configuration profile (tiny-cpu, qwen3-1.7b, qwen3-8b).
        log_root: Where the sink writes (s3://bucket/prefix); empty = the profile's flywheel.log_root.
        since: First day of the window, YYYY-MM-DD; empty = flywheel.harvest_window_days before until.
        until: Last day of the window (included), YYYY-MM-DD; empty = today (UTC).
        budget: Most logged sentences sent to the teacher; 0 = the profile's flywheel.harvest_budget.
        teacher_url: OpenAI-compatible base URL of the teacher (e.g. vLLM); required, the offline teacher cannot label traffic.
        teacher_model: Model name sent to the teacher.
        judge_url: OpenAI-compatible base URL of the judge; empty = no judge.
        judge_threshold: Keep chains the judge scores at or above this (0-10).
    """
    import shutil
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.flywheel.harvest import HELDOUT, LINEAGE, harvest, window

    overrides = [f"data.prepared_dir={Path(prepared.path) / 'data'}", f"cot.teacher_model={teacher_model}",
                 f"cot.judge_threshold={judge_threshold}"]
    overrides += ["cot.teacher=openai", f"cot.teacher_url={teacher_url}"] if teacher_url else []
    overrides += [f"cot.judge_url={judge_url}"] if judge_url else []
    overrides += [f"flywheel.log_root={log_root}"] if log_root else []
    overrides += [f"flywheel.harvest_budget={budget}"] if budget > 0 else []
    cfg = resolve_config(profile=profile, overrides=overrides)
    first, last = window(cfg, since, until)
    summary = harvest(cfg, since=first, until=last, out_dir=Path(cot.path))
    Path(heldout.path).mkdir(parents=True, exist_ok=True)
    for name in (HELDOUT, LINEAGE):
        shutil.copy(Path(cot.path) / name, Path(heldout.path) / name)
    meta = {"since": first.isoformat(), "until": last.isoformat(), "log_root": summary["log_root"]}
    cot.metadata.update({**meta, "accepted": summary["accepted"], "rejected": summary["rejected"]})
    heldout.metadata.update({**meta, "records": summary["heldout"]})
    for key in ("records", "distinct_sentences", "dropped_eval_sentences", "selected", "selected_uncertain",
                "accepted", "rejected", "heldout"):
        stats.log_metric(key, summary[key])
    stats.log_metric("accept_rate", round(summary["accept_rate"], 4))
    for reason, count in summary["skipped"].items():
        stats.log_metric(f"skipped/{reason}", count)
