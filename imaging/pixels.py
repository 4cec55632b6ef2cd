"""What every decoder returns: a C-contiguous ``uint8`` array of shape (H, W, 1) or (H, W, 3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from imaging.errors import DecodeErrorKind, ImageDecodeError


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels: uint8, (H, W, 1) grey or (H, W, 3) RGB, C-contiguous."""

    pixels: np.ndarray
    source_format: str  # one of imaging.formats.SUPPORTED_FORMATS
    metadata: Mapping[str, str] = field(default_factory=dict)


def as_hwc(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) → C-contiguous uint8 (H, W, C)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ImageDecodeError(
            f"decoded pixels have an unexpected shape {pixels.shape}", DecodeErrorKind.CORRUPT
        )
    return np.ascontiguousarray(pixels, dtype=np.uint8)
