from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def check_window(prepared: Input[Dataset], profile: str, log_root: str, since: str, until: str,
                 lookback_days: int) -> NamedTuple("Outputs", [("usable", int), ("since", str), ("until", str),
                                                                 ("message", str)]):
    """Decide whether a refresh run has traffic to learn from, before any teacher call or GPU hour.

    Reads the payload sink's records of the window and counts the distinct sentences that are not
    evaluation sentences: exactly what harvest_traffic would find usable. None: the run ends early
    (skip_refresh) and promotes nothing. The resolved window is handed to harvest_traffic, so a run
    that crosses midnight still harvests the days checked here.

    Args:
        prepared: Prepared datasets from fetch_data (their evaluation splits do not count).
        profile: Configuration profile.
        log_root: Where the sink writes (s3://bucket/prefix); empty = the profile's flywheel.log_root.
        since: First day of the window, YYYY-MM-DD; empty = lookback_days before until.
        until: Last day of the window (included), YYYY-MM-DD; empty = today (UTC).
        lookback_days: Length of the window when since is empty; 0 = the profile's flywheel.harvest_window_days.

    Returns:
        The usable sentence count, the window's first and last day, and a message for the run's log.
    """
    from collections import namedtuple
    from pathlib import Path

    from reasoning_ner.config import resolve_config
    from reasoning_ner.refresh import check_window as check

    overrides = [f"data.prepared_dir={Path(prepared.path) / 'data'}"]
    overrides += [f"flywheel.log_root={log_root}"] if log_root else []
    overrides += [f"flywheel.harvest_window_days={lookback_days}"] if lookback_days > 0 else []
    result = check(resolve_config(profile=profile, overrides=overrides), since, until)
    print(result["message"])
    return namedtuple("Outputs", ["usable", "since", "until", "message"])(
        result["usable"], result["since"], result["until"], result["message"])
