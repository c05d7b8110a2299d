"""HTTP plumbing every route shares: the JSON error type and the JSON response."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, current_app

from serving.model_store import ModelStore, ServedModel
from serving.settings import ServingSettings


class ApiError(Exception):
    """Answered as `{"error": message}` with `status` (and `headers`, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, mimetype="application/json")


def store() -> ModelStore:
    return current_app.extensions["model_store"]


def settings() -> ServingSettings:
    return current_app.extensions["serving_settings"]


def find_model(name: str, version: int | None) -> ServedModel:
    model = store().get(name, version)
    if model is None:
        if name not in store().models:
            raise ApiError(404, f"unknown model '{name}'")
        raise ApiError(404, f"model '{name}' has no version {version}; versions: {sorted(store().models[name])}")
    return model
