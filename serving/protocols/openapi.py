"""The OpenAPI 3.1 document, generated from the request and response types in `serving.protocols.schemas`;
only what is known at run time is filled in here: the served model names and class names."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from serving.http.route_table import Route
from serving.protocols import oip_schemas, schemas

REF = "#/components/schemas/{model}"
# name -> the type whose JSON Schema the document carries under that name
COMPONENTS: dict[str, Any] = {
    "ClassifyRequest": schemas.ClassifyRequest,
    "TFServingRequest": schemas.TFServingRequest,
    "FeedbackRequest": TypeAdapter(schemas.FeedbackRequest),
    "PredictionResponse": TypeAdapter(schemas.PredictionResponse),
    "FeedbackAccepted": TypeAdapter(schemas.FeedbackAccepted),
    "TFServingResponse": TypeAdapter(schemas.TFServingResponse),
    "ErrorResponse": TypeAdapter(schemas.ErrorResponse),
    "InferenceRequest": TypeAdapter(oip_schemas.InferenceRequest),
    "InferenceResponse": TypeAdapter(oip_schemas.InferenceResponse),
    "ModelMetadata": TypeAdapter(oip_schemas.ModelMetadata),
    "ServerMetadata": TypeAdapter(oip_schemas.ServerMetadata),
    "ReadyResponse": TypeAdapter(oip_schemas.ReadyResponse),
}
ERRORS = {
    400: "malformed input",
    401: "missing or wrong bearer token (MLOPS_SERVE_FEEDBACK_TOKEN)",
    404: "unknown model, version or prediction id",
    408: "request body not received in time",
    409: "prediction already labelled",
    413: "body, batch or image too large",
    415: "unsupported content type",
    429: "rate limited",
    503: "warming up: not every model has answered its first prediction yet",
}
# A prediction's id is labelled on the route of the version that made it (the answer's `model.version`).
FEEDBACK_LINK = {
    "feedback": {
        "operationId": "feedback",
        "parameters": {"name": "$request.path.name", "version": "$response.body#/model/version"},
        "requestBody": {"id": "$response.body#/predictions/0/id", "class_id": 0},
    }
}


def component_schemas() -> dict[str, dict]:
    """Every type under its name, with the models they share hoisted beside them."""
    keyed, shared = TypeAdapter.json_schemas(
        [(name, "validation", adapter) for name, adapter in COMPONENTS.items()], ref_template=REF
    )
    unnamed = {name: keyed[(name, "validation")] for name in COMPONENTS if "$ref" not in keyed[(name, "validation")]}
    return {**shared.get("$defs", {}), **unnamed}  # named models are in $defs already; unions are not


def _ref(name: str) -> dict:
    return {"$ref": REF.format(model=name)}


def _errors(*codes: int) -> dict:
    return {
        str(code): {"description": ERRORS[code], "content": {"application/json": {"schema": _ref("ErrorResponse")}}}
        for code in codes
    }


def _ok(schema: dict, description: str = "OK", status: str = "200", links: dict | None = None) -> dict:
    response: dict = {"description": description, "content": {"application/json": {"schema": schema}}}
    return {status: {**response, "links": links} if links else response}


def _body(content: dict) -> dict:
    return {"required": True, "content": content}


def openapi_document(routes: list[Route], listing: list[dict], class_names: list[str], max_batch: int) -> dict:
    """`routes`: the server's route table (paths, path parameters and error statuses come from it);
    `listing`: the served models (their names become the `name` enum); `class_names`: every class a
    served model knows (feedback labels); `max_batch`: images per request (described, answered 413)."""
    components = component_schemas()
    feedback = components["FeedbackRequest"]["properties"]
    feedback["label"]["enum"] = class_names
    feedback["class_id"]["maximum"] = max(len(class_names) - 1, 0)
    parameters = {
        "name": {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": [m["name"] for m in listing]},
        },
        "version": {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
    }
    operations = operations_by_doc(max_batch)
    paths: dict[str, dict] = {}
    for route in routes:
        operation = {"tags": [tag_of(route.path)], **operations[route.doc]}
        operation["responses"] = {**operation["responses"], **_errors(*route.statuses)}
        path = paths.setdefault(route.path, {})
        if route.variables:
            path["parameters"] = [parameters[v] for v in route.variables]
        path[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Clothes classifier", "version": "1.0.0"},
        "paths": paths,
        "components": {"schemas": components},
    }


def tag_of(path: str) -> str:
    """The protocol a path belongs to: Swagger UI groups the operations by it."""
    if path.startswith("/v1/"):
        return "TensorFlow Serving REST"
    if path.startswith("/v2"):
        return "Open Inference Protocol v2"
    if path.startswith("/models"):
        return "models (course API)"
    return "operations"


def operations_by_doc(max_batch: int) -> dict[str, dict]:
    """What each kind of operation takes and answers when it succeeds (`Route.doc` names one)."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    plain = {"responses": _ok({"type": "object"})}
    header = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "description": "binary tensor data extension: the JSON header's length; raw tensors follow",
        "schema": {"type": "integer", "minimum": 1},
    }

    def json_or_binary(schema: str) -> dict:
        return {"application/json": {"schema": _ref(schema)}, "application/octet-stream": binary}

    return {
        "models": {"summary": "List served models and versions", **plain},
        "info": {"summary": "Model metadata", **plain},
        "classify": {
            "summary": f"Classify 28x28 images (pixels 0-255) or PNG/JPEG files, at most {max_batch} per request",
            "parameters": [
                {
                    "name": "input",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "boolean"},
                    "description": "true: each prediction also carries the 28x28 pixels the model saw",
                }
            ],
            "requestBody": _body(
                {
                    "application/json": {"schema": _ref("ClassifyRequest")},
                    "image/png": binary,
                    "image/jpeg": binary,
                    "application/octet-stream": {
                        **binary,
                        "description": "N x 784 bytes: 28x28 uint8 pixels, row-major",
                    },
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {"file": {"type": "string", "format": "binary"}},
                        },
                        "encoding": {"file": {"contentType": "image/png, image/jpeg"}},
                    },
                }
            ),
            "responses": _ok(_ref("PredictionResponse"), links=FEEDBACK_LINK),
        },
        "feedback": {
            "operationId": "feedback",
            "summary": "The true label of an earlier prediction, by the id its answer carried",
            "requestBody": _body({"application/json": {"schema": _ref("FeedbackRequest")}}),
            "responses": _ok(_ref("FeedbackAccepted"), "recorded", "202"),
        },
        "live": plain,
        "ready": {"responses": _ok({"type": "object"})},
        "metrics": {"responses": {"200": {"description": "Prometheus text format"}}},
        "openapi": {"summary": "This document", **plain},
        "tfs_status": {"summary": "TF Serving status", **plain},
        "tfs_predict": {
            "summary": "TensorFlow Serving predict: instances are model inputs scaled to 0-1",
            "requestBody": _body({"application/json": {"schema": _ref("TFServingRequest")}}),
            "responses": _ok(_ref("TFServingResponse")),
        },
        "oip_server": {"responses": _ok(_ref("ServerMetadata"))},
        "oip_ready": {"responses": _ok(_ref("ReadyResponse"))},
        "oip_metadata": {
            "summary": "Open Inference Protocol v2 model metadata",
            "responses": _ok(_ref("ModelMetadata")),
        },
        "oip_infer": {
            "summary": "Open Inference Protocol v2 inference: input 'image' (UINT8 or FP32 pixels 0-255)",
            "parameters": [header],
            "requestBody": _body(json_or_binary("InferenceRequest")),
            "responses": {
                "200": {
                    "description": "outputs as JSON data, or (binary_data) raw after the JSON header",
                    "content": json_or_binary("InferenceResponse"),
                }
            },
        },
    }
