from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("train-gpu"), install_kfp_package=False)
def evaluate_model(
    model: Input[Model],
    prepared: Input[Dataset],
    profile: str,
    suite: str,
    limit: int,
    report: Output[HTML],
    report_json: Output[Artifact],
    metrics: Output[Metrics],
):
    """Evaluate on the zero-shot suite (CrossNER x5, MIT Movie, MIT Restaurant) and the supervised suite.

    Greedy decoding with vLLM on a GPU (transformers otherwise); paper-parity string-set F1 and
    strict offset F1 per dataset and label, parse and ungrounded rates. The HTML report embeds the
    per-dataset F1 chart with the paper's Table 1 markers.

    Args:
        model: The model to evaluate.
        prepared: Prepared datasets (test splits).
        profile: Configuration profile.
        suite: zero-shot, supervised or all.
        limit: Sentences per dataset (seeded sample); 0 = the profile's setting.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.evaluation import evaluate
    from reasoning_ner.inference import make_engine
    from reasoning_ner.steps import model_lineage

    cfg = resolve_config(profile=profile, overrides=[f"eval.limit={limit}"] if limit > 0 else [])
    suites = ["zero-shot", "supervised"] if suite == "all" else [suite]
    lineage = model_lineage(model.path)
    out = Path(tempfile.mkdtemp())
    engine = make_engine(model.path, cfg.eval.backend, cfg.eval.batch_size)
    result = evaluate(engine, cfg, suites, Path(prepared.path) / "data", out, model.uri, lineage)
    shutil.copy(out / "report.html", report.path)
    shutil.copy(out / "report.json", report_json.path)
    for suite_name, s in result["suites"].items():
        metrics.log_metric(f"{suite_name}/paper_f1", round(s["macro"]["paper_f1"], 4))
        metrics.log_metric(f"{suite_name}/strict_f1", round(s["macro"]["strict_f1"], 4))
        metrics.log_metric(f"{suite_name}/parse_rate", round(s["mean_parse_rate"], 4))
        for name, ds in s["datasets"].items():
            metrics.log_metric(f"{name}/paper_f1", round(ds["paper"]["f1"], 4))
