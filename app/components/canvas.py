"""The tile editor's canvas (streamlit-drawable-canvas): what it shows, and what a drawing means.

The canvas shows the tile enlarged `scale` times with the working mask tinted on it. Whatever the tool,
the page asks the canvas for its rendered drawing (RGBA) and reads the drawn pixels back at tile
resolution, so brush strokes, filled polygons and clicks all arrive as one boolean map. These are plain
functions, tested without a browser.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MASK_TINT = np.array([230, 40, 40], np.float32)  # red reads against vegetation and bare ground
TINT_ALPHA = 0.45


def background(rgb: np.ndarray, mask: np.ndarray, scale: int) -> Image.Image:
    """The tile in true colour with the mask tinted red, enlarged with square pixels."""
    shown = rgb.astype(np.float32)
    tinted = mask.astype(bool)
    shown[tinted] = (1 - TINT_ALPHA) * shown[tinted] + TINT_ALPHA * MASK_TINT
    image = Image.fromarray(shown.astype(np.uint8))
    return image.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST)


def drawn_region(image_data: np.ndarray | None, shape: tuple[int, int], scale: int) -> np.ndarray:
    """Tile pixels under anything drawn: a tile pixel counts when any of its scale × scale canvas
    pixels is painted (alpha > 0)."""
    h, w = shape
    if image_data is None:
        return np.zeros(shape, bool)
    painted = np.asarray(image_data)[: h * scale, : w * scale, 3] > 0
    padded = np.zeros((h * scale, w * scale), bool)
    padded[: painted.shape[0], : painted.shape[1]] = painted
    return padded.reshape(h, scale, w, scale).any(axis=(1, 3))
