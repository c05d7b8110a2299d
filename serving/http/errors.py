"""The one place a domain error becomes an HTTP status: every `ServingError` is answered as
`{"error": message}` with the status of the nearest class in `STATUS` (and the headers the status
calls for: WWW-Authenticate on 401, Retry-After on 429)."""

from __future__ import annotations

from flask import Response

from serving.errors import (
    AlreadyLabelled,
    BodyTooLarge,
    FeedbackDisabled,
    ImageTooLarge,
    InvalidInput,
    ModelNotFound,
    PredictionNotFound,
    RateLimited,
    ServingError,
    Unauthorized,
    UnsupportedMediaType,
)
from serving.http.responses import json_response

STATUS: dict[type[ServingError], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    ModelNotFound: 404,
    PredictionNotFound: 404,
    FeedbackDisabled: 404,
    AlreadyLabelled: 409,
    ImageTooLarge: 413,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
}


def status_of(error: ServingError) -> int:
    """The status of the most specific class of `error` in the table (ImageTooLarge before InvalidInput)."""
    return next((STATUS[kind] for kind in type(error).__mro__ if kind in STATUS), 400)


def error_response(error: ServingError) -> Response:
    headers = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    return json_response({"error": error.message}, status_of(error), headers)
