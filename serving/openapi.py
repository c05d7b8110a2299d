"""The OpenAPI 3.1 description of the server, built from what is actually served."""

from __future__ import annotations


def _image(maximum: float, channel: bool = False) -> dict:
    """28x28 numbers in 0..maximum, or 28x28x1 with `channel`."""
    pixel: dict = {"type": "number", "minimum": 0, "maximum": maximum}
    if channel:
        pixel = {"type": "array", "minItems": 1, "maxItems": 1, "items": pixel}
    row = {"type": "array", "minItems": 28, "maxItems": 28, "items": pixel}
    return {"type": "array", "minItems": 28, "maxItems": 28, "items": row}


def _batch(maximum: float, max_batch: int, named: bool = False) -> dict:
    """A batch holds images of one form: all 28x28 or all 28x28x1 (with `named`, as {"image": ...}).
    Its size limit is a server limit answered with 413, so it is described rather than validated."""
    forms = []
    for channel in (False, True):
        item = _image(maximum, channel)
        if named:
            item = {
                "type": "object",
                "required": ["image"],
                "additionalProperties": False,
                "properties": {"image": item},
            }
        forms.append({"type": "array", "minItems": 1, "items": item})
    return {"anyOf": forms, "description": f"at most {max_batch} images (MLOPS_SERVE_MAX_BATCH); more: 413"}


def _exactly_one(fields: dict[str, dict]) -> dict:
    """An object with exactly one of the fields."""
    return {
        "oneOf": [
            {"type": "object", "required": [name], "not": {"required": [other]}, "properties": {name: schema}}
            for name, schema in fields.items()
            for other in fields
            if other != name
        ]
    }


IMAGE_28 = {"anyOf": [_image(255), _image(255, channel=True)]}
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


def _feedback(class_names: list[str]) -> dict:
    return {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "as issued with the prediction"},
            "label": {"type": "string", "enum": class_names},
            "class_id": {"type": "integer", "minimum": 0, "maximum": max(len(class_names) - 1, 0)},
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


def _json(schema: dict, description: str = "OK", links: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    return {"200": {**response, "links": links} if links else response}


# A prediction's id is labelled on the route of the version that made it (the answer's `model.version`).
FEEDBACK_LINK = {
    "feedback": {
        "operationId": "feedback",
        "parameters": {"name": "$request.path.name", "version": "$response.body#/model/version"},
        "requestBody": {"id": "$response.body#/predictions/0/id", "class_id": 0},
    }
}


def openapi_document(listing: list[dict], class_names: list[str], max_batch: int) -> dict:
    """`class_names`: every class any served model knows (feedback labels); `max_batch`: images per request."""
    names = [m["name"] for m in listing]
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
    version_param = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    classify_body = {
        "required": True,
        "content": {
            "application/json": {"schema": _exactly_one({"image": IMAGE_28, "images": _batch(255, max_batch)})},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                },
                "encoding": {"file": {"contentType": "image/png, image/jpeg"}},
            },
        },
    }
    classify = {
        "summary": "Classify one or more 28x28 images (pixels 0-255) or PNG/JPEG files",
        "requestBody": classify_body,
        "responses": {**_json(PREDICTION_RESPONSE, links=FEEDBACK_LINK), **_errors(400, 404, 408, 413, 415)},
    }
    info = {"summary": "Model metadata", "responses": {**_json({"type": "object"}), **_errors(404)}}
    instances = {"anyOf": [*_batch(1.0, max_batch)["anyOf"], *_batch(1.0, max_batch, named=True)["anyOf"]]}
    tfs_body = {
        "required": True,
        "content": {"application/json": {"schema": _exactly_one({"instances": instances, "inputs": instances})}},
    }
    tfs_predict = {
        "summary": "TensorFlow Serving predict: instances are model inputs scaled to 0-1",
        "requestBody": tfs_body,
        "responses": {**_json({"type": "object"}), **_errors(400, 404, 413, 415)},
    }
    plain = {"responses": _json({"type": "object"})}
    status = {"summary": "TF Serving status", "responses": {**_json({"type": "object"}), **_errors(404)}}
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
                    "operationId": "feedback",
                    "summary": "The true label of an earlier prediction, by the id its answer carried",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _feedback(class_names)}},
                    },
                    "responses": {"202": {"description": "recorded"}, **_errors(400, 401, 404, 409, 415, 429)},
                },
            },
            "/v1/models/{name}": {"parameters": [name_param], "get": status},
            "/v1/models/{name}/versions/{version}": {"parameters": [name_param, version_param], "get": status},
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
