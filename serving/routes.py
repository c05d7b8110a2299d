"""The course's REST contract: model info and classification per model and version, feedback on
earlier predictions, health, metrics and the OpenAPI document."""

from __future__ import annotations

import hmac
from typing import Any

import numpy as np
from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST

from serving import metrics
from serving.feedback import RateLimit, bearer_token
from serving.http import ApiError, find_model, json_response, settings, store
from serving.inputs import read_json, read_pixels
from serving.model_store import ServedModel
from serving.openapi import openapi_document
from serving.prediction_log import PredictionLog
from serving.preprocessing import to_model_input
from serving.schemas import FeedbackAccepted, FeedbackRequest, Prediction, PredictionResponse, validate

api = Blueprint("api", __name__)


def prediction_log() -> PredictionLog | None:
    return current_app.extensions.get("prediction_log")


def predict(model: ServedModel, batch: np.ndarray, *, answer_ids: bool = True) -> tuple[np.ndarray, list[str]]:
    """Probabilities plus one id per image, the handle for feedback on that prediction: issued when the
    answer carries them or the prediction log records them (an HMAC each, a fifth of a batch's cost)."""
    probabilities = model.predict(batch)
    counts = np.bincount(probabilities.argmax(axis=1), minlength=len(model.class_names))
    for class_id in np.flatnonzero(counts):
        metrics.predictions(model.name, model.version, model.class_names[class_id]).inc(int(counts[class_id]))
    log = prediction_log()
    ids: list[str] = []
    if answer_ids or log is not None:
        ids = current_app.extensions["prediction_ids"].issue(model.name, model.version, len(batch))
    if log is not None:
        log.log_predictions(ids, model.name, model.version, probabilities, batch)
    return probabilities, ids


def classify(name: str, version: int | None) -> Response:
    model = find_model(name, version)
    pixels, applied = read_pixels()
    probabilities, ids = predict(model, to_model_input(pixels))
    class_ids = probabilities.argmax(axis=1)
    answer = PredictionResponse(
        model={"name": model.name, "version": model.version},
        result=probabilities,  # type: ignore[typeddict-item]  # orjson writes the array as lists
        predictions=[
            Prediction(id=i, label=model.class_names[c], class_id=int(c), confidence=float(p[c]), preprocessing=a)
            for i, c, p, a in zip(ids, class_ids, probabilities, applied, strict=True)
        ],
    )
    return json_response(answer)


@api.get("/models")
def list_models() -> Response:
    return json_response({"models": store().listing()})


@api.get("/models/<name>/v<int:version>")
def model_info(name: str, version: int) -> Response:
    return json_response(find_model(name, version).info())


@api.get("/models/<name>/latest")
def latest_info(name: str) -> Response:
    return json_response(find_model(name, None).info())


@api.post("/models/<name>/v<int:version>")
def classify_version(name: str, version: int) -> Response:
    return classify(name, version)


@api.post("/models/<name>/latest")
def classify_latest(name: str) -> Response:
    return classify(name, None)


@api.post("/models/<name>/v<int:version>/feedback")
def feedback(name: str, version: int) -> Response:
    """The true label of an earlier prediction (by its id), so online accuracy can be measured and the
    labelled inputs can retrain the model: only ids this server issued, one label each."""
    model = find_model(name, version)
    log = prediction_log()
    if log is None:
        raise ApiError(
            404, "this server does not log predictions (MLOPS_SERVE_PREDICTION_LOG_DIR), so it takes no feedback"
        )
    token = settings().feedback_token
    if token and not hmac.compare_digest(bearer_token(request.headers.get("Authorization")) or "", token):
        raise ApiError(401, "feedback needs 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    limit: RateLimit = current_app.extensions["feedback_rate"]
    if not limit.allow():
        raise ApiError(429, "too much feedback; slow down", {"Retry-After": str(limit.retry_after())})
    if request.mimetype != "application/json":
        raise ApiError(415, "feedback is application/json")
    body: FeedbackRequest = validate(FeedbackRequest, read_json())
    class_id = body.class_id
    if body.label is not None and body.label in model.class_names:
        class_id = model.class_names.index(body.label)
    elif class_id is None or not 0 <= class_id < len(model.class_names):
        raise ApiError(400, f"feedback needs 'label' (one of {model.class_names}) or a valid 'class_id'")
    if not current_app.extensions["prediction_ids"].verify(body.id, model.name, model.version):
        raise ApiError(404, f"no prediction with id '{body.id}' was made by {model.name} v{model.version} here")
    if not current_app.extensions["labelled_ids"].claim(body.id):
        raise ApiError(409, f"prediction '{body.id}' is already labelled; the first label stands")
    log.log_feedback(body.id, model.name, model.version, class_id)
    return json_response(FeedbackAccepted(status="recorded", id=body.id, class_id=class_id), 202)


@api.get("/health/live")
def live() -> Response:
    return json_response({"status": "alive"})


@api.get("/health/ready")
def ready() -> Response:
    """Ready when every model has at least one working version; a failing prediction log is reported
    (`prediction_log`) but does not take the server out of rotation: serving matters more."""
    if not store().ready:
        return json_response({"status": "not ready", "models": store().listing()}, 503)
    body: dict[str, Any] = {"status": "ready", "models": store().listing()}
    log = prediction_log()
    if log is not None:
        body["prediction_log"] = f"degraded: {log.error}" if log.error else "ok"
    return json_response(body)


@api.get("/metrics")
def prometheus_metrics() -> Response:
    return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)


@api.get("/openapi.json")
def openapi() -> Response:
    class_names = sorted({c for versions in store().models.values() for m in versions.values() for c in m.class_names})
    return json_response(openapi_document(store().listing(), class_names, settings().max_batch))
