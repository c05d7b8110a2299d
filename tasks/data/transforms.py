"""How a garment's image is disturbed on purpose, the same way for the copies training adds and the
slices evaluation judges on: rotated and shifted, relit within the lighting slice's ranges."""

from __future__ import annotations

import numpy as np
from PIL import Image

# The lighting slice's ranges, which training's relighting (tasks.training.train.relit) also draws from.
LIGHTING_CONTRAST = (0.6, 1.0)
LIGHTING_BRIGHTNESS = (0.0, 40.0)


def moved(pixels: np.ndarray, angle: float, dx: int, dy: int) -> Image.Image:
    """A 28x28 garment rotated by `angle` degrees and shifted, black filling what comes in: the
    `rotation_shift` slice, and the copies training adds (`tasks.training.train.with_moved_copies`)."""
    return Image.fromarray(pixels).rotate(angle, Image.Resampling.BILINEAR, translate=(dx, dy))
