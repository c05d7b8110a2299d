"""The JSON answer every protocol adapter and error handler writes (orjson: numpy arrays as lists)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, mimetype="application/json")
    response.headers.update(headers or {})
    return response
