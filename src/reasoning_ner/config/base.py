"""The base of every configuration section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    # Unknown keys are errors: a typo in params.yaml must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
