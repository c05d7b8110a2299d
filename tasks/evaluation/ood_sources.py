"""Inputs that are not clothing, made offline from what installed packages ship, as image files a user
might send: drawn digits (scikit-learn's `digits`), crops of photos (scikit-learn's sample images),
printed text (Pillow's bundled font), filled shapes, stripes and noise. Each is read back through the
server's own conversion (`serving.preprocessing.decode_image`), so the out-of-distribution flag is
judged on what serving feeds the model. Seeded: the same seed makes the same files.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from serving.preprocessing import decode_image
from tasks.evaluation.slices import encode

OOD_SOURCES = ("digits", "scenes", "text", "shapes", "stripes", "noise")


@cache
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images  # (1797, 8, 8) in 0..16


@cache
def _scenes() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return load_sample_images().images  # two 427x640 RGB photos


def digits(rng: np.random.Generator) -> bytes:
    """A handwritten digit, dark ink on white, scaled up as a phone photo of a note would be."""
    image = _digits()[rng.integers(len(_digits()))]
    ink = Image.fromarray(np.uint8(255 - image * 255 / 16)).resize((96, 96), Image.Resampling.BICUBIC)
    return encode(ink, "PNG")


def scenes(rng: np.random.Generator) -> bytes:
    """A square crop of a scene (a building, a flower), 64-300 px, as a JPEG."""
    photo = _scenes()[rng.integers(len(_scenes()))]
    side = int(rng.integers(64, 301))
    top, left = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
    return encode(Image.fromarray(photo[top : top + side, left : left + side]), "JPEG", quality=85)


def text(rng: np.random.Generator) -> bytes:
    """A line or two of printed letters in black on white."""
    size = int(rng.integers(14, 33))
    font = ImageFont.load_default(size=size)
    lines = [
        " ".join("".join(rng.choice(list(string.ascii_letters), rng.integers(2, 8))) for _ in range(rng.integers(1, 4)))
        for _ in range(rng.integers(1, 3))
    ]
    canvas = Image.new("L", (12 + size * 10, 12 + size * 3), 255)
    ImageDraw.Draw(canvas).multiline_text((6, 6), "\n".join(lines), fill=int(rng.integers(0, 80)), font=font)
    return encode(canvas, "PNG")


def shapes(rng: np.random.Generator) -> bytes:
    """One to three filled circles, triangles or stars in grey on white."""
    canvas = Image.new("L", (128, 128), 255)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(1, 4)):
        x, y, r = (int(v) for v in rng.integers((20, 20, 10), (108, 108, 40)))
        fill = int(rng.integers(0, 160))
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        else:
            corners = 3 if kind == 1 else 5
            draw.regular_polygon((x, y, r), corners, rotation=float(rng.uniform(0, 360)), fill=fill)
    return encode(canvas, "PNG")


def stripes(rng: np.random.Generator) -> bytes:
    """A grating at a random angle and period: fabric swatches, barcodes, blinds."""
    side = 96
    yy, xx = np.mgrid[0:side, 0:side]
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 24)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    pixels = np.where(wave > 0, 255, int(rng.integers(0, 120))) if rng.random() < 0.5 else 127.5 + 127.5 * wave
    return encode(Image.fromarray(np.uint8(pixels)), "PNG")


def noise(rng: np.random.Generator) -> bytes:
    """Sensor noise or a blank wall: uniform, or smoothed into blotches."""
    pixels = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if rng.random() < 0.5:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 4))))
    return encode(image, "PNG")


MAKERS: dict[str, Callable[[np.random.Generator], bytes]] = {
    "digits": digits,
    "scenes": scenes,
    "text": text,
    "shapes": shapes,
    "stripes": stripes,
    "noise": noise,
}


def ood_files(source: str, size: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng([seed, OOD_SOURCES.index(source)])
    return [MAKERS[source](rng) for _ in range(size)]


def build_ood_slices(size: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """source -> (N, 28, 28) uint8, as the server reads the files."""
    return {
        source: np.stack([decode_image(data)[0] for data in ood_files(source, size, seed)]) for source in OOD_SOURCES
    }
