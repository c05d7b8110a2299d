"""Reading a request's body into pixels: JSON (validated by `serving.protocols.schemas`), a raw PNG/JPEG body,
or multipart file uploads; image work runs off the event loop (`offload`)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
from flask import request
from werkzeug.formparser import parse_form_data

from serving.errors import BodyTooLarge, ImageTooLarge, InvalidInput, UnsupportedMediaType
from serving.http.context import data_plane
from serving.preprocessing import (
    IMAGE_SIZE,
    UNCHANGED,
    Preprocessing,
    batch_to_dataset_form,
    contains_bool,
    decode_image,
    decoded_pixels,
)
from serving.protocols.schemas import ClassifyRequest, OneImage, check_batch_size, validate
from serving.settings import ServingSettings

IMAGE_TYPES = {"image/png", "image/jpeg"}
PIXEL_FIELDS = ("image", "images", "instances", "inputs")
IMAGE_BYTES = IMAGE_SIZE * IMAGE_SIZE


def read_body() -> bytes:
    """The body; Werkzeug cuts a body of unknown length (chunked) at the limit without a word, so
    reaching the limit counts as over it."""
    body = request.get_data(cache=False)
    limit = data_plane().settings.max_body_bytes
    if request.content_length is None and len(body) >= limit:
        raise BodyTooLarge(f"request body over {limit} bytes")
    return body


def read_json(numbers_only: bool = False, body: bytes | None = None) -> Any:
    """`numbers_only`: the payload carries pixel arrays, where a boolean must be an error (numpy would
    read True as 1); the full walk runs only when the raw body holds such a token."""
    body = read_body() if body is None else body
    payload = parse_json(body)
    suspicious = numbers_only and (b"true" in body or b"false" in body) and isinstance(payload, dict)
    if suspicious and any(contains_bool(payload.get(key)) for key in PIXEL_FIELDS):
        raise InvalidInput("pixel values must be numbers, not booleans")
    return payload


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from exc


def read_pixels(body: bytes) -> tuple[np.ndarray, list[Preprocessing]]:
    """(N, 28, 28) float32 pixels 0-255 in the dataset's form from a request `body` (`read_body()`) of
    JSON, a raw PNG/JPEG image or multipart `file` uploads, and what the conversion did to each image."""
    mimetype, plane = request.mimetype, data_plane()
    settings = plane.settings
    if mimetype == "application/json":
        typed = validate(ClassifyRequest, read_json(numbers_only=True, body=body), max_batch=settings.max_batch)
        return dataset_form(typed.image if isinstance(typed, OneImage) else typed.images)  # both (N, 28, 28)
    if mimetype == "application/octet-stream":
        return dataset_form(raw_pixels(body, settings.max_batch))
    if mimetype in IMAGE_TYPES:
        return plane.run(decode_files, [body], settings)
    if mimetype == "multipart/form-data":
        environ = {**request.environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
        files = plane.run(multipart_files, environ, settings)
        if not files:
            raise InvalidInput("multipart upload needs one or more 'file' fields")
        check_batch_size(files, settings.max_batch)
        return plane.run(decode_files, files, settings)
    raise UnsupportedMediaType(
        f"unsupported content type '{mimetype or 'none'}'; send application/json, image/png, "
        "image/jpeg, multipart/form-data or application/octet-stream",
    )


def dataset_form(pixels: np.ndarray) -> tuple[np.ndarray, list[Preprocessing]]:
    """Pixel arrays in the dataset's form, unless the server is set to take them as they come."""
    return batch_to_dataset_form(pixels) if data_plane().settings.preprocess else (pixels, [UNCHANGED] * len(pixels))


def raw_pixels(body: bytes, max_batch: int) -> np.ndarray:
    """`application/octet-stream`: N images of 28x28 uint8 pixels, row-major, back to back; no parsing
    at all, the fastest way to send a batch."""
    if not body or len(body) % IMAGE_BYTES:
        raise InvalidInput(
            f"an application/octet-stream body is N x {IMAGE_BYTES} bytes (28x28 uint8 pixels, row-major); "
            f"got {len(body)} bytes"
        )
    count = len(body) // IMAGE_BYTES
    check_batch_size(count, max_batch)
    return np.frombuffer(body, np.uint8).reshape(count, IMAGE_SIZE, IMAGE_SIZE).astype(np.float32)


def multipart_files(environ: dict, settings: ServingSettings) -> list[bytes]:
    """The `file` parts of a multipart body (no request context needed, so it can run in a thread)."""
    _stream, _form, files = parse_form_data(
        environ, max_content_length=settings.max_body_bytes, max_form_parts=settings.max_batch + 8
    )
    return [f.read() for f in files.getlist("file")]


def decode_files(files: list[bytes], settings: ServingSettings) -> tuple[np.ndarray, list[Preprocessing]]:
    """Image files within the request's decoding budget, which is checked from the headers before any
    pixel is decoded."""
    budget = settings.max_request_pixels
    total = sum(decoded_pixels(data, settings.max_image_pixels) for data in files)
    if total > budget:
        raise ImageTooLarge(
            f"the {len(files)} images decode to {total:,} pixels, over the budget of {budget:,} per request"
        )
    decoded = [decode_image(data, settings.max_image_pixels, settings.preprocess) for data in files]
    return np.stack([pixels for pixels, _ in decoded]).astype(np.float32), [applied for _, applied in decoded]
