from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def validate_data(prepared: Input[Dataset], cot: Input[Dataset], profile: str, data_docs: Output[HTML], summary: Output[Metrics]):
    """Validation gate (Great Expectations): fails the run when any expectation fails.

    Checks the CoT training data: required fields and types, non-empty text, offsets consistent
    with the surface text, labels within each record's schema, unique ids, CoT format and length,
    no sentence shared with an evaluation split, no zero-shot dataset in training data. The Data
    Docs pages are published as one HTML artifact.

    Args:
        prepared: Prepared datasets (evaluation splits for the leakage check).
        cot: Accepted CoT records from synthesize_cot.
        profile: Configuration profile.
    """
    import html
    import tempfile
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.validation import find_eval_files, format_report, validate_dataset

    cfg = resolve_config(profile=profile)
    out = Path(tempfile.mkdtemp())
    report = validate_dataset([Path(cot.path) / "accepted.jsonl"], find_eval_files(Path(prepared.path) / "data"), "cot",
                              cfg.data.zero_shot_datasets, out, cfg.cot.min_chain_words, cfg.cot.max_chain_words)
    pages = sorted((out / "data_docs" / "validations").rglob("*.html"))
    frames = "".join(f"<h3>{html.escape(p.stem)}</h3><iframe style='width:100%;height:900px' srcdoc=\"{html.escape(p.read_text())}\"></iframe>"
                     for p in pages)
    Path(data_docs.path).write_text(f"<html><body><pre>{html.escape(format_report(report))}</pre>{frames}</body></html>")
    stats = report.statistics
    summary.log_metric("success", bool(report.success))
    summary.log_metric("failed_expectations", len(report.failed))
    summary.log_metric("evaluated_expectations", stats.get("evaluated_expectations", 0))
    if not report.success:
        raise RuntimeError("data validation failed:\n" + format_report(report))
