"""An explanation's picture for the API: the heat overlay of :mod:`imaging.overlays` (the
same picture ``medret explain`` draws) on the model's canvas, as a PNG data URL."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from imaging.overlays import heat_overlay


def overlay_png(canvas: torch.Tensor, grid: np.ndarray, patch_size: int) -> bytes:
    """PNG of the uint8 (3, H, W) canvas with ``grid`` (rows, cols in [0, 1]) drawn over it,
    one block of ``patch_size`` pixels per cell."""
    rgb = np.ascontiguousarray(canvas.permute(1, 2, 0).numpy())  # (H, W, 3) uint8
    out = io.BytesIO()
    Image.fromarray(heat_overlay(rgb, grid, cell=patch_size)).save(out, format="PNG")
    return out.getvalue()


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
