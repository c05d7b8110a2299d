"""Flask app factory: the course's REST contract, a TensorFlow-Serving-compatible API and the Open
Inference Protocol v2 (`serving.protocols`), health, metrics and the OpenAPI document, with every error
answered as JSON (domain errors by `serving.http.errors`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flask import Response, g, request
from werkzeug.exceptions import HTTPException

from serving import metrics
from serving.data_plane import DataPlane
from serving.errors import ServingError
from serving.http.context import ServingApp
from serving.http.errors import error_response
from serving.http.responses import json_response
from serving.http.route_table import Route
from serving.http.ui import register_ui
from serving.protocols import course, oip, service, tf_serving
from serving.settings import ServingSettings

log = logging.getLogger(__name__)
# Every route the server answers, in the order /openapi.json lists them.
ROUTES: list[Route] = [*course.ROUTES, *service.ROUTES, *tf_serving.ROUTES, *oip.ROUTES]


def create_app(
    model_root: str | Path | None = None,
    settings: ServingSettings | None = None,
    *,
    warm_up: bool = True,
) -> ServingApp:
    """`warm_up=False` defers the first prediction (gunicorn does it per worker after fork)."""
    settings = settings or ServingSettings()
    if model_root is not None:
        settings = settings.model_copy(update={"model_root": Path(model_root)})
    plane = DataPlane.build(settings)
    if warm_up:
        plane.models.warm_up()

    app = ServingApp(__name__, plane, ROUTES)
    register_ui(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["MAX_FORM_PARTS"] = settings.max_batch + 8  # files, plus room for a few plain fields

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests(endpoint, request.method, response.status_code).inc()
        metrics.latency(endpoint).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    app.register_error_handler(ServingError, error_response)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        message = {404: "no such route; see GET /openapi.json"}.get(code, exc.description)
        if code == 413:
            too_long = (request.content_length or 0) > settings.max_body_bytes or request.content_length is None
            message = (
                f"request body over {settings.max_body_bytes} bytes"
                if too_long or request.mimetype != "multipart/form-data"
                else f"multipart request with more than {settings.max_batch} files (MLOPS_SERVE_MAX_BATCH)"
            )
        response = json_response({"error": message}, code)
        response.headers.update({k: v for k, v in exc.get_headers() if k.lower() != "content-type"})  # e.g. Allow
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"error": "internal server error"}, 500)

    return app
