from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("train-gpu"), install_kfp_package=False)
def evaluate_refresh(
    model: Input[Model],
    prepared: Input[Dataset],
    heldout: Input[Dataset],
    profile: str,
    limit: int,
    report: Output[HTML],
    report_json: Output[Artifact],
    metrics: Output[Metrics],
):
    """Evaluate a refreshed model on the frozen suites plus the held-out slice of harvested traffic.

    The zero-shot (CrossNER x5, MIT Movie, MIT Restaurant) and supervised suites are the same files
    the main pipeline evaluates, so the promotion step can compare with the champion's record; the
    held-out harvested sentences (teacher-annotated, never trained on) are the report's `harvested`
    suite: the gain on the served traffic next to the zero-shot cost.

    Args:
        model: The refreshed model.
        prepared: Prepared datasets (test splits of the frozen suites).
        heldout: Held-out harvested records (heldout.jsonl) from harvest_traffic.
        profile: Configuration profile.
        limit: Sentences per frozen dataset (seeded sample); 0 = the profile's setting.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.inference import make_engine
    from reasoning_ner.refresh import evaluate_refresh as run_evaluation
    from reasoning_ner.steps import model_lineage

    cfg = resolve_config(profile=profile, overrides=[f"eval.limit={limit}"] if limit > 0 else [])
    lineage = model_lineage(model.path)
    heldout_path = Path(heldout.path)
    heldout_file = heldout_path / "heldout.jsonl" if heldout_path.is_dir() else heldout_path
    out = Path(tempfile.mkdtemp())
    engine = make_engine(model.path, cfg.eval.backend, cfg.eval.batch_size)
    result = run_evaluation(engine, cfg, ["zero-shot", "supervised"], Path(prepared.path) / "data", heldout_file, out,
                            model.uri, lineage)
    shutil.copy(out / "report.html", report.path)
    shutil.copy(out / "report.json", report_json.path)
    for suite_name, s in result["suites"].items():
        metrics.log_metric(f"{suite_name}/paper_f1", round(s["macro"]["paper_f1"], 4))
        metrics.log_metric(f"{suite_name}/parse_rate", round(s["mean_parse_rate"], 4))
