from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def mix_cot_data(
    harvested: Input[Dataset],
    original: Input[Dataset],
    profile: str,
    mix_ratio: float,
    mixed: Output[Dataset],
    counts: Output[Metrics],
):
    """Mix the harvested CoT records with the original ones for the refresh SFT run.

    Every harvested record is kept; the original records (synthesize_cot's accepted chains) are a
    seeded sample sized by the ratio harvested : original, so the champion keeps seeing the data it
    was trained on while it learns the served traffic. Same layout as synthesize_cot's output
    (accepted.jsonl), so train_sft reads it unchanged.

    Args:
        harvested: Accepted CoT records of the harvested traffic (harvest_traffic).
        original: Accepted CoT records of the original training data (synthesize_cot).
        profile: Configuration profile (seed, refresh.mix_ratio).
        mix_ratio: Harvested : original records, e.g. 1.0 = one original per harvested; 0 = the profile's.
    """
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.refresh import mix_cot

    cfg = resolve_config(profile=profile, overrides=[f"refresh.mix_ratio={mix_ratio}"] if mix_ratio > 0 else [])
    result = mix_cot(Path(harvested.path) / "accepted.jsonl", Path(original.path) / "accepted.jsonl",
                     Path(mixed.path) / "accepted.jsonl", cfg.refresh.mix_ratio, cfg.seed)
    # train_sft's lineage reads the CoT metadata: the original run's, plus what was mixed in.
    mixed.metadata.update({**original.metadata, "harvested": result["harvested"], "original": result["original"],
                           "mix_ratio": result["mix_ratio"], "accepted": result["harvested"] + result["original"]})
    for key in ("harvested", "original", "mix_ratio"):
        counts.log_metric(key, result[key])
