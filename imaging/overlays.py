"""A relevance grid drawn over its canvas: the picture of an explanation (numpy only).

A grid cell ``(r, c)`` covers canvas pixels ``[r*cell:(r+1)*cell, c*cell:(c+1)*cell]``
(``cell`` is the patch size of the finest scale; :mod:`model.explain` makes such grids).
Each pixel is blended with the colour of its cell's value on a dark-red → red → yellow
ramp, with weight ``opacity × value``: cells at 0 keep the image as it is, the most
relevant cells show the most colour. Pixels outside the grid (a canvas side that is not
a multiple of the cell) are left unchanged.
"""

from __future__ import annotations

import numpy as np

# value → RGB anchors of the colour ramp
_RAMP_AT = np.array([0.0, 0.5, 1.0])
_RAMP_RGB = np.array([[128.0, 0.0, 0.0], [255.0, 32.0, 0.0], [255.0, 240.0, 0.0]])


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) → float RGB in [0, 255] (shape + (3,))."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)
    return np.stack([np.interp(v, _RAMP_AT, _RAMP_RGB[:, ch]) for ch in range(3)], axis=-1)


def heat_overlay(
    canvas: np.ndarray, grid: np.ndarray, opacity: float = 0.6, *, cell: int | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 canvas and (rows, cols) grid in [0, 1] → (H, W, 3) uint8 overlay.

    ``cell`` is the side of a grid cell in canvas pixels (default ``H // rows``).
    """
    if canvas.ndim != 3 or canvas.shape[2] != 3 or canvas.dtype != np.uint8:
        raise ValueError(f"canvas must be (H, W, 3) uint8, got {canvas.shape} {canvas.dtype}")
    if grid.ndim != 2 or min(grid.shape) < 1:
        raise ValueError(f"grid must be a non-empty (rows, cols) array, got {grid.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    rows, cols = grid.shape
    side = cell if cell is not None else canvas.shape[0] // rows
    if side < 1 or rows * side > canvas.shape[0] or cols * side > canvas.shape[1]:
        raise ValueError(
            f"a {rows}x{cols} grid of {side}-px cells does not fit a "
            f"{canvas.shape[0]}x{canvas.shape[1]} canvas"
        )
    values = np.clip(np.nan_to_num(grid.astype(np.float32)), 0.0, 1.0)
    pixels = np.repeat(np.repeat(values, side, axis=0), side, axis=1)  # (rows*side, cols*side)
    covered = canvas[: pixels.shape[0], : pixels.shape[1]].astype(np.float32)
    weight = (opacity * pixels)[..., np.newaxis]
    blended = (1.0 - weight) * covered + weight * heat_colours(pixels)
    out = canvas.copy()
    out[: pixels.shape[0], : pixels.shape[1]] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
