"""The one preprocessing implementation shared by training and serving, so they can never disagree."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SIZE = 28
MAX_IMAGE_PIXELS = 40_000_000  # refuse decompression bombs before decoding


class InvalidInput(ValueError):
    """The client sent something that is not a valid image or batch of images."""


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """Scale 0-255 pixels to 0-1 float32 and add the channel axis: (N, 28, 28) -> (N, 28, 28, 1)."""
    return (np.asarray(pixels, dtype=np.float32) / np.float32(255.0))[..., np.newaxis]


def pixels_from_nested(value: object, *, batch: bool, max_value: float = 255.0) -> np.ndarray:
    """Validate a JSON image (28x28) or batch (N x 28 x 28) of numbers in 0..max_value; return (N, 28, 28)
    float32. Strict, because a wrong shape or NaN must be the client's 400, not a model error."""
    if not isinstance(value, list):
        raise InvalidInput("image must be a nested list of numbers")
    if batch and not value:
        raise InvalidInput("images must hold at least one image")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidInput("image must be a nested list of numbers (rows of equal length)") from exc
    expected = 3 if batch else 2
    if not batch and array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]  # accept a trailing channel axis: 28x28x1
    if batch and array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != expected or array.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        want = "N x 28 x 28" if batch else "28 x 28"
        raise InvalidInput(f"expected {want} pixel values, got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise InvalidInput("pixel values must be finite numbers (no NaN or infinity)")
    if array.min() < 0 or array.max() > max_value:
        raise InvalidInput(f"pixel values must lie between 0 and {max_value:g}")
    return array if batch else array[np.newaxis]


def pixels_from_image_bytes(data: bytes) -> np.ndarray:
    """Decode a PNG/JPEG of any size or colour into a (1, 28, 28) grayscale uint8 array."""
    if not data:
        raise InvalidInput("empty image file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in {"PNG", "JPEG"}:
                raise InvalidInput(f"unsupported image format {image.format}; send PNG or JPEG")
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InvalidInput("image is too large to decode")
            gray = image.convert("L")
            if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
                gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8)[np.newaxis]
    except InvalidInput:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput("could not decode the image; send a valid PNG or JPEG") from exc


def load_image_file(path: str) -> np.ndarray:
    """Read an image file from disk as (28, 28) uint8, the dataset's representation."""
    with open(path, "rb") as handle:
        return pixels_from_image_bytes(handle.read())[0]
