"""Open Inference Protocol v2 REST (KServe, Triton, MLServer), so their clients and tooling work
unchanged, with the binary tensor data extension: a JSON header of `Inference-Header-Content-Length`
bytes followed by the raw tensors, the fastest way to send a batch.

The input `image` holds pixels 0-255 (UINT8 or FP32), converted to the dataset's form like every other
input; the outputs are `probabilities` (FP32), `class_id` (INT64), `label` (BYTES) and, for models
exported with the out-of-distribution flag, `ood_score` (FP32) and `in_distribution` (BOOL): extra
outputs a client that asks for the others by name never sees. Errors are
`{"error": message}` with a 4xx, as KServe's v2 servers answer.
"""

from __future__ import annotations

import numpy as np
from flask import Response, request

from serving.data_plane import Predicted
from serving.errors import InvalidInput, UnsupportedMediaType
from serving.http.context import data_plane
from serving.http.responses import json_response
from serving.http.route_table import Route
from serving.models.store import ServedModel
from serving.preprocessing import IMAGE_SIZE, contains_bool, to_model_input, uint8_rows
from serving.protocols.inputs import dataset_form, parse_json, read_body
from serving.protocols.oip_schemas import (
    INPUT,
    OOD_OUTPUTS,
    OUTPUTS,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    ServerMetadata,
    TensorMetadata,
)
from serving.protocols.schemas import check_batch_size, validate
from serving.version import __version__

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_TYPES: dict[str, np.dtype] = {"UINT8": np.dtype(np.uint8), "FP32": np.dtype("<f4")}
IMAGE_SHAPES = ((IMAGE_SIZE, IMAGE_SIZE), (IMAGE_SIZE, IMAGE_SIZE, 1), (IMAGE_SIZE * IMAGE_SIZE,))


def server_metadata() -> Response:
    return json_response(ServerMetadata(name="clothes-serving", version=__version__, extensions=["binary_tensor_data"]))


def live() -> Response:
    return json_response({"live": True})


def ready() -> Response:
    ready = data_plane().models.ready
    return json_response({"ready": ready}, 200 if ready else 503)


def model_metadata(name: str, version: int | None = None) -> Response:
    plane = data_plane()
    model = plane.find(name, version)
    shapes = {"probabilities": [-1, len(model.class_names)]}  # the others: one value per image
    outputs = outputs_of(model)
    return json_response(
        ModelMetadata(
            name=model.name,
            versions=[str(v) for v in sorted(plane.models.models[model.name])],
            platform="tflite",
            inputs=[TensorMetadata(name=INPUT, datatype="UINT8", shape=[-1, IMAGE_SIZE, IMAGE_SIZE])],
            outputs=[TensorMetadata(name=n, datatype=t, shape=shapes.get(n, [-1])) for n, t in outputs.items()],
        )
    )


def outputs_of(model: ServedModel) -> dict[str, str]:
    return OUTPUTS if model.ood is None else {**OUTPUTS, **OOD_OUTPUTS}


def model_ready(name: str, version: int | None = None) -> Response:
    """Loaded models are warmed up before the server takes traffic, so a found model is ready."""
    plane = data_plane()
    model = plane.find(name, version)
    return json_response({"name": model.name, "ready": plane.models.ready}, 200 if plane.models.ready else 503)


def infer(name: str, version: int | None = None) -> Response:
    plane = data_plane()
    model = plane.find(name, version)
    header, binary = split_body(read_body(), request.headers.get(HEADER_LENGTH), request.mimetype)
    body: InferenceRequest = validate(InferenceRequest, parse_json(header))
    if (b"true" in header or b"false" in header) and any(contains_bool(i.data) for i in body.inputs):
        raise InvalidInput("tensor data must be numbers, not booleans")
    available = outputs_of(model)
    requested = body.outputs or [RequestOutput(name=output) for output in available]
    unknown = [o.name for o in requested if o.name not in available]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; this model has {list(available)}")
    pixels, _applied = dataset_form(input_pixels(body.inputs, binary, plane.settings.max_batch))
    predicted = plane.predict(model, to_model_input(pixels), answer_ids=False)
    binary_all = (body.parameters or {}).get("binary_data_output") is True
    return encode(model, body.id, requested, binary_all, predicted)


def split_body(body: bytes, header_length: str | None, mimetype: str) -> tuple[bytes, bytes]:
    """(JSON header, binary tensors): the whole body is JSON unless `Inference-Header-Content-Length` says
    where it ends."""
    if header_length is None:
        if mimetype not in ("", "application/json"):
            raise UnsupportedMediaType(f"inference requests are application/json, or carry a {HEADER_LENGTH} header")
        return body, b""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
        raise InvalidInput(f"{HEADER_LENGTH} must be a number of bytes within the body's {len(body)}")
    return body[: int(header_length)], body[int(header_length) :]


def input_pixels(inputs: list[RequestInput], binary: bytes, max_batch: int) -> np.ndarray:
    """(N, 28, 28) float32 pixels from the one input tensor, from its JSON data or its binary bytes."""
    if len(inputs) != 1 or inputs[0].name != INPUT:
        raise InvalidInput(f"expected one input named '{INPUT}', got {[i.name for i in inputs]}")
    tensor = inputs[0]
    dtype = INPUT_TYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"input '{INPUT}' is UINT8 or FP32, got {tensor.datatype!r}")
    shape = tuple(tensor.shape)
    if len(shape) < 2 or shape[1:] not in IMAGE_SHAPES or shape[0] < 1:
        raise InvalidInput(f"input '{INPUT}' has shape [N, 28, 28], [N, 28, 28, 1] or [N, 784], got {list(shape)}")
    count = shape[0]
    check_batch_size(count, max_batch)
    size = count * IMAGE_SIZE * IMAGE_SIZE
    declared = (tensor.parameters or {}).get("binary_data_size")
    if declared is None:
        if binary:
            raise InvalidInput(f"{len(binary)} bytes after the JSON header, but no input declares binary_data_size")
        values = json_values(tensor.data, dtype, size)
    else:
        expected = size * dtype.itemsize
        if tensor.data is not None or type(declared) is not int or declared != expected or len(binary) != expected:
            raise InvalidInput(
                f"input '{INPUT}' of shape {list(shape)} is {expected} bytes of {tensor.datatype}: binary_data_size "
                f"is {declared!r} and {len(binary)} bytes follow the header (and no 'data' beside it)"
            )
        values = np.frombuffer(binary, dtype)
    if dtype.kind == "f" and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 255):
        raise InvalidInput(f"input '{INPUT}' holds pixel values 0-255, finite")
    return values.reshape(count, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)


def json_values(data: object, dtype: np.dtype, size: int) -> np.ndarray:
    """The tensor's `data`, flat or nested, as `size` values of `dtype`."""
    if not isinstance(data, list):
        raise InvalidInput(f"input '{INPUT}' needs 'data' (a list of numbers) or parameters.binary_data_size")
    values = uint8_rows([data])  # a flat list of 0..255 integers, the usual case
    if values is None:
        try:
            values = np.asarray(data)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise InvalidInput(f"input '{INPUT}' data must be numbers (nested rows of equal length)") from exc
        if values.dtype.kind not in "iuf":
            raise InvalidInput(f"input '{INPUT}' data must be numbers")
        values = values.ravel()
    if values.size != size:
        raise InvalidInput(f"input '{INPUT}' data holds {values.size} values; its shape says {size}")
    if dtype.kind == "u" and values.dtype != np.uint8:
        integral = np.isfinite(values).all() and (values == np.round(values)).all()
        if not integral or values.min() < 0 or values.max() > 255:
            raise InvalidInput(f"input '{INPUT}' is UINT8: integers 0-255")
    return values.astype(dtype, copy=False)


def encode(
    model: ServedModel,
    request_id: str | None,
    requested: list[RequestOutput],
    binary_all: bool,
    predicted: Predicted,
) -> Response:
    """The requested outputs, each as JSON data or (`binary_data`) raw bytes after the JSON header."""
    probabilities = predicted.probabilities
    class_ids = probabilities.argmax(axis=1)
    labels = [model.class_names[c] for c in class_ids]
    arrays = {"probabilities": probabilities.astype("<f4"), "class_id": class_ids.astype("<i8")}
    if predicted.ood_scores is not None and predicted.in_distribution is not None:
        arrays["ood_score"] = predicted.ood_scores.astype("<f4")
        arrays["in_distribution"] = predicted.in_distribution.astype(np.bool_)  # BOOL: one byte each
    outputs: list[ResponseOutput] = []
    chunks: list[bytes] = []
    for output in requested:
        shape = list(probabilities.shape) if output.name == "probabilities" else [len(labels)]
        entry = ResponseOutput(name=output.name, shape=shape, datatype=outputs_of(model)[output.name])
        if (output.parameters or {}).get("binary_data", binary_all) is True:
            raw = bytes_tensor(labels) if output.name == "label" else arrays[output.name].tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = labels if output.name == "label" else arrays[output.name].ravel()
        outputs.append(entry)
    answer = InferenceResponse(model_name=model.name, model_version=str(model.version), outputs=outputs)
    if request_id is not None:
        answer["id"] = request_id
    response = json_response(answer)
    if chunks:
        header = response.get_data()
        response.set_data(header + b"".join(chunks))
        response.headers[HEADER_LENGTH] = str(len(header))
        response.mimetype = "application/octet-stream"
    return response


def bytes_tensor(values: list[str]) -> bytes:
    """BYTES elements as the protocol sends them: each a 4-byte little-endian length, then the bytes."""
    encoded = [value.encode() for value in values]
    return b"".join(len(item).to_bytes(4, "little") + item for item in encoded)


ROUTES = [
    Route("/v2", "GET", server_metadata, "oip_server"),
    Route("/v2/health/live", "GET", live, "live"),
    Route("/v2/health/ready", "GET", ready, "oip_ready", (503,)),
    *[
        route
        for prefix in ("/v2/models/<model:name>", "/v2/models/<model:name>/versions/<int:version>")
        for route in (
            Route(prefix, "GET", model_metadata, "oip_metadata", (404,)),
            Route(f"{prefix}/ready", "GET", model_ready, "oip_ready", (404, 503)),
            Route(f"{prefix}/infer", "POST", infer, "oip_infer", (400, 404, 415)),
        )
    ],
]
