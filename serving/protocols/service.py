"""What every client of the server shares, whatever its protocol: liveness and readiness, Prometheus
metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving import metrics
from serving.http.context import data_plane, serving_app
from serving.http.responses import json_response
from serving.http.route_table import Route
from serving.protocols.openapi import openapi_document


def live() -> Response:
    return json_response({"status": "alive"})


def ready() -> Response:
    """Ready when every model has at least one working version; a failing prediction log is reported
    (`prediction_log`) but does not take the server out of rotation: serving matters more."""
    plane = data_plane()
    if not plane.models.ready:
        return json_response({"status": "not ready", "models": plane.models.listing()}, 503)
    body: dict[str, Any] = {"status": "ready", "models": plane.models.listing()}
    log = plane.log
    if log is not None:
        body["prediction_log"] = f"degraded: {log.error}" if log.error else "ok"
    return json_response(body)


def prometheus_metrics() -> Response:
    return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)


def openapi() -> Response:
    plane = data_plane()
    models = plane.models
    class_names = sorted({c for versions in models.models.values() for m in versions.values() for c in m.class_names})
    return json_response(
        openapi_document(serving_app().routes, models.listing(), class_names, plane.settings.max_batch)
    )


ROUTES = [
    Route("/health/live", "GET", live, "live"),
    Route("/health/ready", "GET", ready, "ready", (503,)),
    Route("/metrics", "GET", prometheus_metrics, "metrics"),
    Route("/openapi.json", "GET", openapi, "openapi"),
]
