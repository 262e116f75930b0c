"""HTTP errors: what a bad request, an unknown model or a full machine looks like on the wire.

Every error leaves the server as a status code and an OpenAI-style body, `{"error": {"message", "type", "param",
"code"}}` (the Ollama endpoints send Ollama's `{"error": "message"}`). `LocalseekError`s from the layers below are
mapped here, in one place.
"""

from __future__ import annotations

from localseek.errors import (
    EngineError,
    InsufficientMemoryError,
    LocalseekError,
    ModelFileError,
    NotInstalledError,
    UsageError,
)
from localseek.models.catalog import UnknownModelError


class HTTPError(Exception):
    """An error with its HTTP status and OpenAI error fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> HTTPError:
    return HTTPError(400, message, param=param, code=code)


class ContextOverflow(UsageError):
    """The prompt does not fit the model's context."""


def from_localseek(exc: LocalseekError) -> HTTPError:
    """The HTTP face of an error from the layers below."""
    message = str(exc)
    if isinstance(exc, ContextOverflow):
        return HTTPError(400, message, param="messages", code="context_length_exceeded")
    if isinstance(exc, (UnknownModelError, NotInstalledError, ModelFileError)):
        return HTTPError(404, message, param="model", code="model_not_found")
    if isinstance(exc, InsufficientMemoryError):
        return HTTPError(507, message, type="insufficient_memory", code="model_does_not_fit")
    if isinstance(exc, UsageError):
        return HTTPError(400, message)
    if isinstance(exc, EngineError):
        return HTTPError(500, message, type="server_error")
    return HTTPError(500, message, type="server_error")
