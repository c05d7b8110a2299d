"""The engineered hold-out: test-split garments as shops, phones and scanners send them, each slice
made deterministically (seeded) and read back through the server's own path (encode -> bytes ->
`serving.preprocessing.decode_image`), so a model is judged on what serving will feed it.

Photo-style slices: `catalogue` (dark garment on white, 320x320 RGB JPEG), `cutout` (transparent
background, 224x224 RGBA PNG), `small_offcentre` (garment at ~45% of a white 4:3 frame, off-centre,
slightly blurred JPEG), `jpeg30` (a catalogue photo at JPEG quality 30). Robustness slices on the
dataset's own 28x28 form: `lighting` (contrast and brightness), `rotation_shift` (up to 10 degrees and
2 pixels), `noise` (Gaussian, sigma 12).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from serving.preprocessing import decode_image
from tasks.data.transforms import LIGHTING_BRIGHTNESS, LIGHTING_CONTRAST, moved

PHOTO_SLICES = ("catalogue", "cutout", "small_offcentre", "jpeg30")
ROBUSTNESS_SLICES = ("lighting", "rotation_shift", "noise")
SLICES = PHOTO_SLICES + ROBUSTNESS_SLICES
Slices = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (pixels (N, 28, 28) uint8, labels)


def encode(image: Image.Image, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def _on_white(pixels: np.ndarray, size: int) -> Image.Image:
    """The garment dark on white at `size` px, as a product photo shows it (the dataset negated)."""
    return Image.fromarray(255 - pixels).resize((size, size), Image.Resampling.BICUBIC)


def catalogue(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    return encode(_on_white(pixels, 320).convert("RGB"), "JPEG", quality=85)


def jpeg30(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    return encode(_on_white(pixels, 320).convert("RGB"), "JPEG", quality=30)


def cutout(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark garment, transparent elsewhere: alpha from the garment's own intensity."""
    big = Image.fromarray(pixels).resize((224, 224), Image.Resampling.BICUBIC)
    alpha = big.point(lambda value: min(255, value * 4))
    colour = Image.merge("RGB", [big.point(lambda value: 255 - value)] * 3)
    colour.putalpha(alpha)
    return encode(colour, "PNG")


def small_offcentre(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    frame = Image.new("L", (400, 300), 255)
    side = int(300 * rng.uniform(0.4, 0.5))
    garment = _on_white(pixels, side)
    left, top = int(rng.integers(0, 400 - side)), int(rng.integers(0, 300 - side))
    frame.paste(garment, (left, top))
    return encode(frame.filter(ImageFilter.GaussianBlur(1.0)).convert("RGB"), "JPEG", quality=85)


def lighting(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    contrast, brightness = rng.uniform(*LIGHTING_CONTRAST), rng.uniform(*LIGHTING_BRIGHTNESS)
    return encode(Image.fromarray(np.clip(pixels * contrast + brightness, 0, 255).astype(np.uint8)), "PNG")


def rotation_shift(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    angle, dx, dy = rng.uniform(-10, 10), int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
    return encode(moved(pixels, angle, dx, dy), "PNG")


def noise(pixels: np.ndarray, rng: np.random.Generator) -> bytes:
    noisy = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    return encode(Image.fromarray(noisy), "PNG")


MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "catalogue": catalogue,
    "cutout": cutout,
    "small_offcentre": small_offcentre,
    "jpeg30": jpeg30,
    "lighting": lighting,
    "rotation_shift": rotation_shift,
    "noise": noise,
}


def slice_files(name: str, x: np.ndarray, y: np.ndarray, size: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """The slice's image files and their labels: the same `size` test images for a given seed."""
    rng = np.random.default_rng([seed, SLICES.index(name)])
    chosen = np.sort(rng.choice(len(x), size=min(size, len(x)), replace=False))
    return [MAKERS[name](x[i], rng) for i in chosen], y[chosen]


def build_slices(x: np.ndarray, y: np.ndarray, size: int = 1000, seed: int = 0) -> Slices:
    """Every slice as the server reads its files."""
    slices = {}
    for name in SLICES:
        files, labels = slice_files(name, x, y, size, seed)
        slices[name] = (np.stack([decode_image(data)[0] for data in files]), labels)
    return slices
