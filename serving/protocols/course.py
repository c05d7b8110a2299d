"""The course's REST contract, as a protocol adapter of the data plane: model info and classification
per model and version, and feedback on earlier predictions."""

from __future__ import annotations

import hmac
import time

import numpy as np
from flask import Response, request

from serving.errors import FeedbackDisabled, InvalidInput, RateLimited, Unauthorized, UnsupportedMediaType
from serving.http.context import data_plane
from serving.http.responses import json_response
from serving.http.route_table import Route
from serving.log.feedback import bearer_token
from serving.preprocessing import to_model_input
from serving.protocols.inputs import read_body, read_json, read_pixels
from serving.protocols.schemas import FeedbackAccepted, FeedbackRequest, Prediction, PredictionResponse, validate


def classify(name: str, version: int | None) -> Response:
    started = time.perf_counter()
    plane = data_plane()
    model = plane.find(name, version)
    body = read_body()
    pixels, applied = read_pixels(body)
    predicted = plane.predict(model, to_model_input(pixels))
    probabilities = predicted.probabilities
    class_ids = probabilities.argmax(axis=1)
    scores = [None] * len(class_ids) if predicted.ood_scores is None else predicted.ood_scores.tolist()
    usual = [None] * len(class_ids) if predicted.in_distribution is None else predicted.in_distribution.tolist()
    predictions = [
        Prediction(
            id=i,
            label=model.class_names[c],
            class_id=int(c),
            confidence=float(p[c]),
            ood_score=score,
            in_distribution=flag,
            preprocessing=a,
        )
        for i, c, p, score, flag, a in zip(predicted.ids, class_ids, probabilities, scores, usual, applied, strict=True)
    ]
    if request.args.get("input", "").lower() in ("1", "true"):  # what the model saw, e.g. for the upload page
        for prediction, seen in zip(predictions, np.rint(pixels).astype(np.uint8), strict=True):
            prediction["input"] = seen  # orjson writes the array as lists
    answer = PredictionResponse(
        model={"name": model.name, "version": model.version},
        result=probabilities,  # type: ignore[typeddict-item]  # orjson writes the array as lists
        predictions=predictions,
    )
    response = json_response(answer)
    mirror = plane.mirror
    shadow = mirror.wants(model.name) if mirror else None
    if mirror and shadow:  # sent again once this answer is on its way (WSGI close)
        offered = plane.mirrored(shadow, model, predicted, body, request.content_type or "", started)
        response.call_on_close(lambda: mirror.offer(offered))
    return response


def list_models() -> Response:
    return json_response({"models": data_plane().models.listing()})


def model_info(name: str, version: int) -> Response:
    return json_response(data_plane().find(name, version).info())


def latest_info(name: str) -> Response:
    return json_response(data_plane().find(name, None).info())


def classify_version(name: str, version: int) -> Response:
    return classify(name, version)


def classify_latest(name: str) -> Response:
    return classify(name, None)


def feedback(name: str, version: int) -> Response:
    """The true label of an earlier prediction (by its id), so online accuracy can be measured and the
    labelled inputs can retrain the model: only ids this server issued, one label each."""
    plane = data_plane()
    model = plane.find(name, version)
    if plane.log is None:
        raise FeedbackDisabled()
    token = plane.settings.feedback_token
    if token and not hmac.compare_digest(bearer_token(request.headers.get("Authorization")) or "", token):
        raise Unauthorized("feedback needs 'Authorization: Bearer <token>'")
    limit = plane.feedback_rate
    if not limit.allow():
        raise RateLimited("too much feedback; slow down", limit.retry_after())
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("feedback is application/json")
    body: FeedbackRequest = validate(FeedbackRequest, read_json())
    class_id = body.class_id
    if body.label is not None and body.label in model.class_names:
        class_id = model.class_names.index(body.label)
    elif class_id is None or not 0 <= class_id < len(model.class_names):
        raise InvalidInput(f"feedback needs 'label' (one of {model.class_names}) or a valid 'class_id'")
    plane.record_feedback(model, body.id, class_id, body.reviewed)
    return json_response(FeedbackAccepted(status="recorded", id=body.id, class_id=class_id), 202)


ROUTES = [
    Route("/models", "GET", list_models, "models"),
    Route("/models/<name>/v<int:version>", "GET", model_info, "info", (404,)),
    Route("/models/<name>/v<int:version>", "POST", classify_version, "classify", (400, 404, 415)),
    Route("/models/<name>/latest", "GET", latest_info, "info", (404,)),
    Route("/models/<name>/latest", "POST", classify_latest, "classify", (400, 404, 415)),
    Route("/models/<name>/v<int:version>/feedback", "POST", feedback, "feedback", (400, 401, 404, 409, 415, 429)),
]
