"""Field types that read JSON as JSON Schema does, shared by the request bodies of every protocol
(:mod:`.schemas`, :mod:`.openai_schemas`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StringConstraints


def _integral(value: Any) -> Any:
    """JSON Schema's ``integer`` admits 3.0; pydantic's strict int does not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


#: An integer as JSON Schema defines it: ints and integral floats, never strings or booleans.
JSONInt = Annotated[int, BeforeValidator(_integral)]


def json_int(**constraints: Any) -> Any:
    """:data:`JSONInt` with bounds (the bounds must come before the validator to reach the JSON schema)."""
    return Annotated[int, Field(**constraints), BeforeValidator(_integral)]


NonEmpty = Annotated[str, StringConstraints(min_length=1)]
