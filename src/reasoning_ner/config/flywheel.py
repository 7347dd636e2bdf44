"""The configuration sections of the improvement loop (docs/flywheel.md): traffic capture and harvest,
and the refresh pipeline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import _Section


class FlywheelSection(_Section):
    """The improvement loop: served traffic captured by KServe's payload logger (docs/flywheel.md)."""

    log_root: str = Field("work/traffic", description="Where the payload sink writes date=YYYY-MM-DD/ JSONL parts (fsspec: "
                          "a folder, or s3://bucket/prefix in a cluster).")
    logger_mode: Literal["all", "request"] = Field("all", description="KServe logger mode: all = requests and responses "
                                                   "(the served model's entities are kept), request = sentences only.")
    retention_days: int = Field(30, ge=1, description="Logged partitions older than this are deleted (the text is the users' data).")
    opt_out_labels: list[str] = Field(default_factory=list, description="A sentence asked with any of these labels is never logged.")
    pair_timeout_s: float = Field(30.0, gt=0, description="How long a request waits for its response event before it is "
                                  "written without predictions.")
    flush_records: int = Field(500, ge=1, description="Records buffered before a JSONL part is written.")
    flush_seconds: float = Field(60.0, gt=0, description="Longest time records stay buffered.")
    harvest_window_days: int = Field(7, ge=1, description="`rner data harvest` without --since: the window is the last this "
                                     "many days up to --until (default today, UTC).")
    harvest_budget: int = Field(2000, ge=1, description="Most logged sentences sent to the teacher per harvest.")
    harvest_uncertain_share: float = Field(0.5, ge=0, le=1, description="Share of the budget filled first with uncertain "
                                           "sentences (parse error, ungrounded span, low agreement); the rest is label-balanced.")
    harvest_min_agreement: float = Field(0.5, ge=0, le=1, description="Two logged samples of one sentence whose entity F1 is "
                                         "below this make it uncertain (sentences logged once carry no agreement signal).")
    harvest_heldout_fraction: float = Field(0.1, ge=0, lt=1, description="Seeded share of the teacher-labelled sentences kept "
                                            "out of training as heldout.jsonl (canonical NER records for evaluation).")
    harvest_seed: int = Field(17, description="Seed of the harvest's sampling and held-out split.")


class RefreshSection(_Section):
    """The refresh pipeline: retrain the champion on harvested traffic mixed with the original data (docs/flywheel.md)."""

    mix_ratio: float = Field(1.0, gt=0, description="Harvested : original records in the refresh SFT data (1.0 = one "
                             "original record per harvested one, 0.5 = two); the original records are a seeded sample.")
