from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def synthesize_cot(
    prepared: Input[Dataset],
    profile: str,
    teacher_url: str,
    teacher_model: str,
    judge_url: str,
    judge_threshold: float,
    max_records_per_dataset: int,
    sft_data: str,
    ner_cot_uri: str,
    cot: Output[Dataset],
    stats: Output[Metrics],
):
    """Stage 1: a teacher LLM writes a reasoning chain and a JSON answer for each training sentence.

    Structural checks (answer parses, labels in the schema, spans in the sentence, every entity in
    the chain, chain length, agreement with gold) and an optional LLM judge (keep score >=
    threshold) filter the chains. Sentences that also occur in an evaluation split are dropped.
    The teacher API key comes from the RNER_TEACHER_API_KEY environment variable (a Secret).

    Args:
        prepared: Prepared datasets from fetch_data.
        profile: Configuration profile (tiny-cpu, qwen3-1.7b, qwen3-8b).
        teacher_url: OpenAI-compatible base URL of the teacher (e.g. vLLM); empty = the offline teacher.
        teacher_model: Model name sent to the teacher.
        judge_url: OpenAI-compatible base URL of the judge; empty = no judge.
        judge_threshold: Keep chains the judge scores at or above this (0-10).
        max_records_per_dataset: Cap per training dataset; 0 = all.
        sft_data: synthesized (the teacher writes the chains) or ner-cot (the paper's NER-CoT records from
            ner_cot_uri, with the same structural checks).
        ner_cot_uri: NER-CoT records (JSON or JSONL) at s3://... or a path; used with sft_data ner-cot.
    """
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.cot.ner_cot import build_cot_data
    from reasoning_ner.validation import find_eval_files

    overrides = [f"cot.teacher_model={teacher_model}", f"cot.judge_threshold={judge_threshold}",
                 f"cot.max_records_per_dataset={max_records_per_dataset or 'null'}"]
    if teacher_url:
        overrides += ["cot.teacher=openai", f"cot.teacher_url={teacher_url}"]
    if judge_url:
        overrides.append(f"cot.judge_url={judge_url}")
    overrides += [f"cot.sft_data={sft_data}"] + ([f"cot.ner_cot_uri={ner_cot_uri}"] if ner_cot_uri else [])
    cfg = resolve_config(profile=profile, overrides=overrides)
    data = Path(prepared.path) / "data"
    inputs = [data / name / "train.jsonl" for name in cfg.data.train_datasets]
    result = build_cot_data(cfg, inputs, Path(cot.path), find_eval_files(data), progress=False)
    cot.metadata.update({"accepted": result["accepted"], "rejected": result["rejected"], "teacher": result["teacher"]})
    stats.log_metric("accepted", result["accepted"])
    stats.log_metric("accept_rate", round(result["accept_rate"], 4))
    for reason, rate in result["reject_rate_by_reason"].items():
        stats.log_metric(f"reject_rate/{reason}", round(rate, 4))
