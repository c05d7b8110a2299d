"""The OpenAPI 3.1 description of the server, built from what is actually served."""

from __future__ import annotations

IMAGE_28 = {
    "type": "array",
    "minItems": 28,
    "maxItems": 28,
    "items": {
        "type": "array",
        "minItems": 28,
        "maxItems": 28,
        "items": {"type": "number", "minimum": 0, "maximum": 255},
    },
}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
PREDICTION_RESPONSE = {
    "type": "object",
    "properties": {
        "model": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "integer"}}},
        "result": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "predictions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "description": "handle for feedback"},
                    "label": {"type": "string"},
                    "class_id": {"type": "integer"},
                    "confidence": {"type": "number"},
                },
            },
        },
    },
}


FEEDBACK = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "as issued with the prediction"},
        "label": {"type": "string"},
        "class_id": {"type": "integer", "minimum": 0},
    },
    "anyOf": [{"required": ["label"]}, {"required": ["class_id"]}],
}


def _errors(*codes: int) -> dict:
    text = {
        400: "malformed input",
        401: "missing or wrong bearer token (MLOPS_SERVE_FEEDBACK_TOKEN)",
        404: "unknown model, version or prediction id",
        408: "request body not received in time",
        409: "prediction already labelled",
        413: "body, batch or image too large",
        415: "unsupported content type",
        429: "rate limited",
    }
    return {
        str(c): {
            "description": text[c],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for c in codes
    }


def _json(schema: dict, description: str = "OK") -> dict:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}}


def openapi_document(listing: list[dict]) -> dict:
    names = [m["name"] for m in listing]
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
    version_param = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    classify_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "required": ["image"], "properties": {"image": IMAGE_28}},
                        {
                            "type": "object",
                            "required": ["images"],
                            "properties": {"images": {"type": "array", "minItems": 1, "items": IMAGE_28}},
                        },
                    ]
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
        },
    }
    classify = {
        "summary": "Classify one or more 28x28 images (pixels 0-255) or PNG/JPEG files",
        "requestBody": classify_body,
        "responses": {**_json(PREDICTION_RESPONSE), **_errors(400, 404, 408, 413, 415)},
    }
    info = {"summary": "Model metadata", "responses": {**_json({"type": "object"}), **_errors(404)}}
    instances = {"type": "array", "minItems": 1}
    tfs_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "required": ["instances"], "properties": {"instances": instances}},
                        {"type": "object", "required": ["inputs"], "properties": {"inputs": instances}},
                    ]
                }
            }
        },
    }
    tfs_predict = {
        "summary": "TensorFlow Serving predict: instances are model inputs scaled to 0-1",
        "requestBody": tfs_body,
        "responses": {**_json({"type": "object"}), **_errors(400, 404, 413, 415)},
    }
    plain = {"responses": _json({"type": "object"})}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Clothes classifier", "version": "1.0.0"},
        "paths": {
            "/models": {"get": {"summary": "List served models and versions", **plain}},
            "/models/{name}/v{version}": {
                "parameters": [name_param, version_param],
                "get": info,
                "post": classify,
            },
            "/models/{name}/latest": {"parameters": [name_param], "get": info, "post": classify},
            "/models/{name}/v{version}/feedback": {
                "parameters": [name_param, version_param],
                "post": {
                    "summary": "The true label of an earlier prediction, by the id its answer carried",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": FEEDBACK}}},
                    "responses": {"202": {"description": "recorded"}, **_errors(400, 401, 404, 409, 415, 429)},
                },
            },
            "/v1/models/{name}": {"parameters": [name_param], "get": {"summary": "TF Serving status", **plain}},
            "/v1/models/{name}/versions/{version}": {
                "parameters": [name_param, version_param],
                "get": {"summary": "TF Serving status", **plain},
            },
            "/v1/models/{name}:predict": {"parameters": [name_param], "post": tfs_predict},
            "/v1/models/{name}/versions/{version}:predict": {
                "parameters": [name_param, version_param],
                "post": tfs_predict,
            },
            "/health/live": {"get": plain},
            "/health/ready": {
                "get": {"responses": {**_json({"type": "object"}), "503": {"description": "warming up"}}}
            },
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text format"}}}},
        },
        "components": {"schemas": {"Error": ERROR}},
    }
