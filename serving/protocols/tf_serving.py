"""TensorFlow Serving's REST API, so its clients work unchanged. Its inputs are model inputs (already
scaled to 0-1, with or without the channel axis), not 0-255 pixels."""

from __future__ import annotations

import numpy as np
from flask import Response, request

from serving.errors import UnsupportedMediaType
from serving.http.context import data_plane
from serving.http.responses import json_response
from serving.http.route_table import Route
from serving.models.store import ServedModel
from serving.protocols.inputs import read_json
from serving.protocols.schemas import TFServingInputs, TFServingRequest, TFServingResponse, validate


def status(model: ServedModel) -> dict:
    return {"version": str(model.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def model_status(name: str) -> Response:
    plane = data_plane()
    plane.find(name, None)
    return json_response({"model_version_status": [status(m) for m in plane.models.models[name].values()]})


def version_status(name: str, version: int) -> Response:
    return json_response({"model_version_status": [status(data_plane().find(name, version))]})


def predict_latest(name: str) -> Response:
    return tfs_predict(name, None)


def predict_version(name: str, version: int) -> Response:
    return tfs_predict(name, version)


def tfs_predict(name: str, version: int | None) -> Response:
    plane = data_plane()
    model = plane.find(name, version)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("TensorFlow Serving requests are application/json")
    body = validate(TFServingRequest, read_json(numbers_only=True), max_batch=plane.settings.max_batch)
    batch = body.inputs if isinstance(body, TFServingInputs) else body.instances
    predicted = plane.predict(model, batch[..., np.newaxis], answer_ids=False)
    answer = TFServingResponse(predictions=predicted.probabilities)  # type: ignore[typeddict-item]
    if predicted.ood_scores is not None and predicted.in_distribution is not None:  # keys TF Serving clients ignore
        answer["ood_score"], answer["in_distribution"] = predicted.ood_scores, predicted.in_distribution  # type: ignore[typeddict-item]
    return json_response(answer)


ROUTES = [
    Route("/v1/models/<model:name>", "GET", model_status, "tfs_status", (404,)),
    Route("/v1/models/<model:name>/versions/<int:version>", "GET", version_status, "tfs_status", (404,)),
    Route("/v1/models/<model:name>:predict", "POST", predict_latest, "tfs_predict", (400, 404, 415)),
    Route(
        "/v1/models/<model:name>/versions/<int:version>:predict",
        "POST",
        predict_version,
        "tfs_predict",
        (400, 404, 415),
    ),
]
