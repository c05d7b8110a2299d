"""HTTP plumbing every protocol adapter shares: the JSON error type and the JSON response."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response


class ApiError(Exception):
    """Answered as `{"error": message}` with `status` (and `headers`, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, mimetype="application/json")
