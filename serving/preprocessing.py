"""The one preprocessing implementation shared by training, the pipeline's engineered hold-out, the
client and the server, so they can never disagree: any image in, Fashion-MNIST's form out."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from typing_extensions import TypedDict  # pydantic reads it on Python 3.11

from serving.errors import ImageTooLarge, InvalidInput

IMAGE_SIZE = 28
MAX_IMAGE_PIXELS = 1_600_000  # default per-image decode budget (serving.settings.max_image_pixels)
JPEG_DRAFT_SIZE = 256  # JPEGs decode at 1/2..1/8 scale (DCT scaling) down to no less than this
# A 28x28 image whose border is this dark is already in the dataset's form (Fashion-MNIST's own border
# medians: at most 36 of 255) and is left exactly as it is.
DATASET_BACKGROUND_MAX = 64
GARMENT_LEVEL = 25  # above the background by 10% of the range: garment, not JPEG noise or paper texture
GARMENT_SHARE = 0.01  # a row or column belongs to the garment when this share of it is garment


class Preprocessing(TypedDict):
    """What the conversion did to one image; part of every classification answer."""

    inverted: bool  # light background: negated, so the garment is bright on black as in the dataset
    trimmed: bool  # cut to the garment's bounding box
    resized: bool  # longest edge scaled to 28 and centred


UNCHANGED = Preprocessing(inverted=False, trimmed=False, resized=False)


def border_medians(images: np.ndarray) -> np.ndarray:
    """The median of each image's outermost ring of pixels: its background. (N, H, W) -> (N,)."""
    ring = np.concatenate([images[:, 0, :], images[:, -1, :], images[:, 1:-1, 0], images[:, 1:-1, -1]], axis=1)
    # np.median's own overhead is ~40 us per call, on every JSON request; a ring always holds an even
    # number of pixels (2W + 2H - 4), so its median is the mean of the two middle ones after a sort.
    middle = ring.shape[1] // 2
    return np.sort(ring, axis=1)[:, middle - 1 : middle + 1].mean(axis=1)


def garment_box(pixels: np.ndarray) -> tuple[slice, slice] | None:
    """Rows and columns where the garment is, on a black background; None when nothing stands out."""
    garment = pixels > GARMENT_LEVEL
    rows = np.flatnonzero(garment.mean(axis=1) > GARMENT_SHARE)
    cols = np.flatnonzero(garment.mean(axis=0) > GARMENT_SHARE)
    if not len(rows) or not len(cols):
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def to_dataset_form(gray: np.ndarray) -> tuple[np.ndarray, Preprocessing]:
    """Fashion-MNIST's own conversion of product photos (Xiao et al. 2017), applied to any grayscale
    image (H, W) of 0-255: a light background (estimated from the border), or a dark one with a still
    darker garment, is negated, so the garment is bright on black; the background level becomes 0;
    the image is trimmed to the garment and its longest edge scaled to 28 (the dataset's garments span
    the whole 28 pixels: no margin), centred on a 28x28 canvas. A 28x28 image with a dark border is
    already in that form and comes back as it is."""
    gray = np.asarray(gray, dtype=np.float32)
    background = float(border_medians(gray[np.newaxis])[0])
    if gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and background <= DATASET_BACKGROUND_MAX:
        return gray, UNCHANGED
    # Light backgrounds are negated, as the dataset's photos were; on a dark one, only a darker garment.
    darker = np.count_nonzero(gray < background - GARMENT_LEVEL) > np.count_nonzero(gray > background + GARMENT_LEVEL)
    inverted = bool(background > 127 or darker)  # a plain bool: it goes into the JSON answer
    pixels = 255 - gray if inverted else gray
    level = 255 - background if inverted else background
    if level > 0:
        pixels = np.clip((pixels - level) * (255 / (255 - level)), 0, 255)
    box = garment_box(pixels)
    at_scale = gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and (
        box is None or max(box[0].stop - box[0].start, box[1].stop - box[1].start) >= IMAGE_SIZE - 2
    )
    if at_scale:  # a 28x28 light-background image: only negated
        return pixels.astype(np.float32), Preprocessing(inverted=inverted, trimmed=False, resized=False)
    trimmed = bool(box is not None and pixels[box].shape != pixels.shape)
    garment = pixels[box] if box is not None else pixels
    height, width = garment.shape
    scale = IMAGE_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = Image.fromarray(np.round(garment).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    top, left = (IMAGE_SIZE - size[1]) // 2, (IMAGE_SIZE - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = np.asarray(small, np.float32)
    return canvas, Preprocessing(inverted=inverted, trimmed=trimmed, resized=True)


def batch_to_dataset_form(images: np.ndarray) -> tuple[np.ndarray, list[Preprocessing]]:
    """`to_dataset_form` over (N, 28, 28); images already in the dataset's form (the usual case) are
    found in one vectorised pass and not copied."""
    convert = np.flatnonzero(border_medians(images) > DATASET_BACKGROUND_MAX)
    applied = [UNCHANGED] * len(images)
    if not len(convert):
        return images, applied
    images = images.copy()
    for index in convert:
        images[index], applied[index] = to_dataset_form(images[index])
    return images, applied


def to_model_input(pixels: np.ndarray) -> np.ndarray:
    """Scale 0-255 pixels to 0-1 float32 and add the channel axis: (N, 28, 28) -> (N, 28, 28, 1)."""
    return (np.asarray(pixels, dtype=np.float32) / np.float32(255.0))[..., np.newaxis]


def uint8_rows(rows: list[list]) -> np.ndarray | None:
    """The values of `rows` (lists, checked by the caller: `bytes(5)` is five zeros) as one flat uint8
    array when all are integers in 0..255, the usual JSON body, through `bytes()` at half the cost of
    numpy's generic conversion (which must discover type and shape); None for anything else, which
    numpy then converts or rejects with the precise message."""
    try:
        return np.frombuffer(b"".join(map(bytes, rows)), np.uint8)  # TypeError: floats, strings, nesting
    except (TypeError, ValueError):  # ValueError: outside 0..255
        return None


def _uint8_images(images: list) -> np.ndarray | None:
    """(N, 28, 28) when every image is 28 lists of 28 integers in 0..255; else None."""
    rows = [row for image in images if type(image) is list and len(image) == IMAGE_SIZE for row in image]
    if len(rows) != IMAGE_SIZE * len(images) or set(map(type, rows)) != {list} or set(map(len, rows)) != {IMAGE_SIZE}:
        return None
    values = uint8_rows(rows)
    return None if values is None else values.reshape(len(images), IMAGE_SIZE, IMAGE_SIZE)


def pixels_from_nested(value: object, *, batch: bool, max_value: float = 255.0) -> np.ndarray:
    """Validate a JSON image (28x28) or batch (N x 28 x 28) of numbers in 0..max_value; return (N, 28, 28)
    float32. Strict, because a wrong shape or NaN must be the client's 400, not a model error."""
    if not isinstance(value, list):
        raise InvalidInput("image must be a nested list of numbers")
    if batch and not value:
        raise InvalidInput("images must hold at least one image")
    integers = _uint8_images(value if batch else [value]) if max_value >= 255 else None  # 0..255 is in range
    if integers is not None:
        return integers.astype(np.float32)
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


def grayscale(image: Image.Image) -> Image.Image:
    """As the camera held it (EXIF orientation), transparency on white (a cutout is a garment on a
    light background, like the dataset's photos), then 8-bit grayscale."""
    image = ImageOps.exif_transpose(image)
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image)
    return image.convert("L")


def decode_image(
    data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, convert: bool = True
) -> tuple[np.ndarray, Preprocessing]:
    """Decode a PNG/JPEG of any size or colour into (28, 28) uint8 pixels in the dataset's form, and
    what that took. `convert=False`: the whole frame squeezed to 28x28, as this server did before.

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
            gray = grayscale(image)
            if not convert:
                if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
                    gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, reducing_gap=3.0)
                return np.asarray(gray, dtype=np.uint8), UNCHANGED
            if gray.width * gray.height > 4 * JPEG_DRAFT_SIZE**2:  # the garment needs no more than this
                gray.thumbnail((2 * JPEG_DRAFT_SIZE, 2 * JPEG_DRAFT_SIZE), Image.Resampling.BOX)
            pixels, applied = to_dataset_form(np.asarray(gray, dtype=np.uint8))
            return np.round(pixels).astype(np.uint8), applied
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
    """Read an image file from disk as (28, 28) uint8 in the dataset's form, as the server would."""
    with open(path, "rb") as handle:
        return decode_image(handle.read())[0]
