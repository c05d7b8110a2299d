"""Flask app factory: the course's REST contract, a TensorFlow-Serving-compatible API, health, metrics."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException
from werkzeug.formparser import parse_form_data
from werkzeug.routing import BaseConverter

from serving import metrics
from serving.feedback import LabelledIds, PredictionIds, RateLimit, bearer_token, load_key
from serving.model_store import ModelStore, ServedModel
from serving.openapi import openapi_document
from serving.prediction_log import PredictionLog
from serving.preprocessing import (
    ImageTooLarge,
    InvalidInput,
    contains_bool,
    decoded_pixels,
    pixels_from_image_bytes,
    pixels_from_nested,
    to_model_input,
)
from serving.settings import ServingSettings

log = logging.getLogger(__name__)
T = TypeVar("T")
IMAGE_TYPES = {"image/png", "image/jpeg"}
PIXEL_FIELDS = ("image", "images", "instances", "inputs")
api = Blueprint("api", __name__)


class ModelNameConverter(BaseConverter):
    """A model name never holds ':', so `/v1/models/clothes:predict` is never read as a model named
    'clothes:predict' (whose GET would otherwise make 405 answers list GET as allowed)."""

    regex = "[^/:]+"


class ApiError(Exception):
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


def read_body() -> bytes:
    """The body; Werkzeug cuts a body of unknown length (chunked) at the limit without a word, so
    reaching the limit counts as over it."""
    body = request.get_data(cache=False)
    if request.content_length is None and len(body) >= settings().max_body_bytes:
        raise ApiError(413, f"request body over {settings().max_body_bytes} bytes")
    return body


def read_json(numbers_only: bool = False) -> Any:
    """`numbers_only`: the payload carries pixel arrays, where a boolean must be an error (numpy would
    read True as 1); the full walk runs only when the raw body holds such a token."""
    body = read_body()
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from exc
    suspicious = numbers_only and (b"true" in body or b"false" in body) and isinstance(payload, dict)
    if suspicious and any(contains_bool(payload.get(key)) for key in PIXEL_FIELDS):
        raise ApiError(400, "pixel values must be numbers, not booleans")
    return payload


def check_batch_size(n: int) -> None:
    if n > settings().max_batch:
        raise ApiError(413, f"at most {settings().max_batch} images per request, got {n}")


def read_pixels() -> np.ndarray:
    """(N, 28, 28) float32 pixels 0-255 from JSON, a raw PNG/JPEG body or multipart `file` uploads."""
    mimetype = request.mimetype
    if mimetype == "application/json":
        payload = read_json(numbers_only=True)
        if not isinstance(payload, dict) or ("image" in payload) == ("images" in payload):
            raise ApiError(400, "JSON body must be an object with exactly one of 'image' (28x28) or 'images'")
        if "image" in payload:
            return pixels_from_nested(payload["image"], batch=False)
        if isinstance(payload["images"], list):
            check_batch_size(len(payload["images"]))
        return pixels_from_nested(payload["images"], batch=True)
    if mimetype in IMAGE_TYPES:
        return offload(decode_files, [read_body()], settings())
    if mimetype == "multipart/form-data":
        files = offload(multipart_files, request.environ, settings())
        if not files:
            raise ApiError(400, "multipart upload needs one or more 'file' fields")
        check_batch_size(len(files))
        return offload(decode_files, files, settings())
    raise ApiError(
        415,
        f"unsupported content type '{mimetype or 'none'}'; send application/json, image/png, "
        "image/jpeg or multipart/form-data",
    )


def offload(function: Callable[..., T], *args: Any) -> T:
    """Run CPU-heavy work (multipart parsing, image decoding) where it does not stall other requests.
    The gevent worker installs its hub's thread pool here, one native thread per worker: large uploads
    queue behind each other while the event loop keeps answering everything else (Pillow decodes with
    the GIL released; Python code gives it up every few ms). Elsewhere (threads, tests) a plain call."""
    run = current_app.extensions.get("offload")
    return run(function, *args) if run else function(*args)


def multipart_files(environ: dict, settings: ServingSettings) -> list[bytes]:
    """The `file` parts of a multipart body (no request context needed, so it can run in a thread)."""
    _stream, _form, files = parse_form_data(
        environ, max_content_length=settings.max_body_bytes, max_form_parts=settings.max_batch + 8
    )
    return [f.read() for f in files.getlist("file")]


def decode_files(files: list[bytes], settings: ServingSettings) -> np.ndarray:
    """Image files within the request's decoding budget, which is checked from the headers before any
    pixel is decoded."""
    budget = settings.max_request_pixels
    total = sum(decoded_pixels(data, settings.max_image_pixels) for data in files)
    if total > budget:
        raise ImageTooLarge(
            f"the {len(files)} images decode to {total:,} pixels, over the budget of {budget:,} per request"
        )
    return np.concatenate([pixels_from_image_bytes(data, settings.max_image_pixels) for data in files]).astype(
        np.float32
    )


def predict(model: ServedModel, batch: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Probabilities plus one id per image, the handle for feedback on that prediction."""
    probabilities = model.predict(batch)
    labels = np.asarray(model.class_names)[probabilities.argmax(axis=1)]
    for label, count in zip(*np.unique(labels, return_counts=True), strict=True):
        metrics.PREDICTIONS.labels(model.name, str(model.version), str(label)).inc(int(count))
    ids = current_app.extensions["prediction_ids"].issue(model.name, model.version, len(batch))
    log: PredictionLog | None = current_app.extensions.get("prediction_log")
    if log is not None:
        log.log_predictions(ids, model.name, model.version, probabilities, batch)
    return probabilities, ids


def classify(name: str, version: int | None) -> Response:
    model = find_model(name, version)
    probabilities, ids = predict(model, to_model_input(read_pixels()))
    class_ids = probabilities.argmax(axis=1)
    return json_response(
        {
            "model": {"name": model.name, "version": model.version},
            "result": probabilities,
            "predictions": [
                {"id": i, "label": model.class_names[c], "class_id": int(c), "confidence": float(p[c])}
                for i, c, p in zip(ids, class_ids, probabilities, strict=True)
            ],
        }
    )


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


# TensorFlow Serving's REST API, so its clients work unchanged. Its inputs are model inputs
# (already scaled to 0-1, with or without the channel axis), not 0-255 pixels.
def tf_serving_status(model: ServedModel) -> dict:
    return {"version": str(model.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


@api.post("/models/<name>/v<int:version>/feedback")
def feedback(name: str, version: int) -> Response:
    """The true label of an earlier prediction (by its id), so online accuracy can be measured and the
    labelled inputs can retrain the model: only ids this server issued, one label each."""
    model = find_model(name, version)
    log: PredictionLog | None = current_app.extensions.get("prediction_log")
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
    payload = read_json()
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        raise ApiError(400, "feedback needs 'id': the id of a prediction")
    label, class_id = payload.get("label"), payload.get("class_id")
    if isinstance(class_id, float) and class_id.is_integer():  # JSON Schema's integers include 3.0
        class_id = int(class_id)
    if isinstance(label, str) and label in model.class_names:
        class_id = model.class_names.index(label)
    elif not (isinstance(class_id, int) and not isinstance(class_id, bool) and 0 <= class_id < len(model.class_names)):
        raise ApiError(400, f"feedback needs 'label' (one of {model.class_names}) or a valid 'class_id'")
    if not current_app.extensions["prediction_ids"].verify(payload["id"], model.name, model.version):
        raise ApiError(404, f"no prediction with id '{payload['id']}' was made by {model.name} v{model.version} here")
    if not current_app.extensions["labelled_ids"].claim(payload["id"]):
        raise ApiError(409, f"prediction '{payload['id']}' is already labelled; the first label stands")
    log.log_feedback(payload["id"], model.name, model.version, class_id)
    return json_response({"status": "recorded", "id": payload["id"], "class_id": class_id}, 202)


@api.get("/v1/models/<model:name>")
def tfs_status(name: str) -> Response:
    find_model(name, None)
    return json_response({"model_version_status": [tf_serving_status(m) for m in store().models[name].values()]})


@api.get("/v1/models/<model:name>/versions/<int:version>")
def tfs_version_status(name: str, version: int) -> Response:
    return json_response({"model_version_status": [tf_serving_status(find_model(name, version))]})


@api.post("/v1/models/<model:name>:predict")
def tfs_predict_latest(name: str) -> Response:
    return tfs_predict(name, None)


@api.post("/v1/models/<model:name>/versions/<int:version>:predict")
def tfs_predict_version(name: str, version: int) -> Response:
    return tfs_predict(name, version)


def tfs_predict(name: str, version: int | None) -> Response:
    model = find_model(name, version)
    if request.mimetype != "application/json":
        raise ApiError(415, "TensorFlow Serving requests are application/json")
    payload = read_json(numbers_only=True)
    if not isinstance(payload, dict) or ("instances" in payload) == ("inputs" in payload):
        raise ApiError(400, "JSON body must be an object with exactly one of 'instances' or 'inputs'")
    instances = payload.get("instances", payload.get("inputs"))
    if isinstance(instances, list) and instances and all(isinstance(i, dict) for i in instances):
        if not all(set(i) == {"image"} for i in instances):
            raise ApiError(400, "named instances must have the single input 'image'")
        instances = [i["image"] for i in instances]
    if isinstance(instances, list):
        check_batch_size(len(instances))
    batch = pixels_from_nested(instances, batch=True, max_value=1.0)
    return json_response({"predictions": predict(model, batch[..., np.newaxis])[0]})


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
    log: PredictionLog | None = current_app.extensions.get("prediction_log")
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


def create_app(
    model_root: str | Path | None = None,
    settings: ServingSettings | None = None,
    *,
    warm_up: bool = True,
) -> Flask:
    """`warm_up=False` defers the first prediction (gunicorn does it per worker after fork)."""
    settings = settings or ServingSettings()
    if model_root is not None:
        settings = settings.model_copy(update={"model_root": Path(model_root)})
    model_store = ModelStore.discover(settings.model_root)
    if warm_up:
        model_store.warm_up()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["MAX_FORM_PARTS"] = settings.max_batch + 8  # files, plus room for a few plain fields
    app.extensions["model_store"] = model_store
    app.extensions["serving_settings"] = settings
    if settings.prediction_log_dir is not None:
        app.extensions["prediction_log"] = PredictionLog(
            settings.prediction_log_dir, settings.prediction_log_max_bytes, settings.prediction_log_inputs
        )
    app.extensions["prediction_ids"] = PredictionIds(load_key(settings.feedback_secret, settings.prediction_log_dir))
    app.extensions["labelled_ids"] = LabelledIds()
    app.extensions["feedback_rate"] = RateLimit(settings.feedback_per_minute)
    app.url_map.converters["model"] = ModelNameConverter
    app.register_blueprint(api)

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        metrics.LATENCY.labels(endpoint).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        response = json_response({"error": exc.message}, exc.status)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(InvalidInput)
    def invalid_input(exc: InvalidInput) -> Response:
        return json_response({"error": str(exc)}, 413 if isinstance(exc, ImageTooLarge) else 400)

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
