"""The one preprocessing implementation shared by training and serving, so they can never disagree."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SIZE = 28
MAX_IMAGE_PIXELS = 1_600_000  # default per-image decode budget (serving.settings.max_image_pixels)
JPEG_DRAFT_SIZE = 256  # JPEGs decode at 1/2..1/8 scale (DCT scaling) down to no less than this


class InvalidInput(ValueError):
    """The client sent something that is not a valid image or batch of images."""


class ImageTooLarge(InvalidInput):
    """An image (or a request's images) would cost more pixels to decode than the budget allows (413)."""


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
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidInput("image must be a nested list of numbers (rows of equal length)") from exc
    if array.dtype.kind not in "iuf":  # strings, booleans, objects (ragged rows, huge integers)
        raise InvalidInput("image must be a nested list of numbers (rows of equal length, no strings or booleans)")
    array = array.astype(np.float32, copy=False)
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


def contains_bool(value: object) -> bool:
    """Whether a parsed JSON value holds a boolean anywhere: numpy would silently read True as 1."""
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):  # TF Serving's named instances
        return any(contains_bool(v) for v in value.values())
    return isinstance(value, list) and any(contains_bool(v) for v in value)


def pixels_from_image_bytes(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a PNG/JPEG of any size or colour into a (1, 28, 28) grayscale uint8 array.

    The cost of decoding grows with pixels, not bytes (a 40 KB PNG can hold 40 million), so the size
    in the header is checked against `max_pixels` before anything is decoded. JPEGs are decoded at
    reduced scale where the format allows (DCT scaling, the decoder's own cheap path), so a 12 MP
    photo costs about 1/64 of a full decode; PNG has no such path and is budgeted as it is."""
    if not data:
        raise InvalidInput("empty image file")
    try:
        with _open(data) as image:
            if image.format not in {"PNG", "JPEG"}:
                raise InvalidInput(f"unsupported image format {image.format}; send PNG or JPEG")
            check_budget(image, max_pixels)
            gray = image.convert("L")
            if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
                gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0)
            return np.asarray(gray, dtype=np.uint8)[np.newaxis]
    except InvalidInput:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInput("could not decode the image; send a valid PNG or JPEG") from exc


def _open(data: bytes) -> Image.Image:
    """The image with only its header read; a JPEG set to decode at the smallest DCT scale that keeps
    JPEG_DRAFT_SIZE, so its size is already what decoding will cost."""
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("L", (JPEG_DRAFT_SIZE, JPEG_DRAFT_SIZE))
    return image


def check_budget(image: Image.Image, max_pixels: int) -> None:
    if image.width * image.height > max_pixels:
        raise ImageTooLarge(
            f"{image.format} image of {image.width}x{image.height} pixels is over the decoding budget of "
            f"{max_pixels:,} pixels; scale it down (28x28 is what the model sees)"
        )


def decoded_pixels(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> int:
    """Pixels an image will decode to (after JPEG draft scaling), from its header only: ImageTooLarge
    if one image is over `max_pixels`, 0 if the header is unreadable (decoding then says why)."""
    try:
        with _open(data) as image:
            check_budget(image, max_pixels)
            return image.width * image.height
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return 0


def load_image_file(path: str) -> np.ndarray:
    """Read an image file from disk as (28, 28) uint8, the dataset's representation."""
    with open(path, "rb") as handle:
        return pixels_from_image_bytes(handle.read())[0]
