"""The service's errors. Each carries its HTTP status, its error type and the field at fault (when one
is), so any layer can raise it and the server's one exception handler answers it (:mod:`.server`;
:mod:`.http` reshapes the body under ``/v2``)."""

from __future__ import annotations


class ServingError(Exception):
    """An error with an HTTP status, an error type and (when a field is at fault) its name."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, param: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if status is not None:
            self.status = status


class InvalidRequest(ServingError):
    # 400 as OIP, KServe's InvalidInput and OpenAI answer a bad request (not FastAPI's 422).
    status, type = 400, "invalid_request_error"


class ModelNotFoundError(ServingError):
    status, type = 404, "not_found_error"


class Overloaded(ServingError):
    status, type = 503, "overloaded_error"


class BackendUnavailable(ServingError):
    status, type = 503, "backend_error"


class BadGateway(ServingError):
    """The upstream answered, but not with the JSON object the protocol promises (HTML, a list, no choices)."""

    status, type = 502, "upstream_error"


class BackendTimeout(ServingError):
    status, type = 504, "timeout_error"


class PromptTooLong(InvalidRequest):
    """The prompt plus the generation would not fit the model's context."""
