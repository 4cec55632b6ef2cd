"""PNG, JPEG, TIFF, BMP and WebP → uint8 pixels, with Pillow.

The first frame of multi-frame TIFF/WebP. EXIF orientation is applied for every format
that carries EXIF (JPEG, TIFF, WebP, and PNG ``eXIf``); a broken EXIF block is ignored,
not fatal. Alpha (including palette and ``tRNS`` transparency) is composited over black
and dropped. 8-bit grey and RGB stay as they are; palette, CMYK and YCbCr become RGB;
1-bit becomes 0/255. Grey with more than 8 bits (16-bit, 32-bit integer ``I``, float
``F``) is windowed by :func:`imaging.windowing.robust_window_to_uint8`.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageOps

from imaging.errors import DecodeErrorKind, ImageDecodeError
from imaging.limits import DecodeLimits, check_pixel_count
from imaging.pixels import DecodedImage, as_hwc
from imaging.windowing import robust_window_to_uint8

logger = logging.getLogger(__name__)

_HIGH_DEPTH_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = {"LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}


def decode_raster(data: bytes, source_format: str, limits: DecodeLimits) -> DecodedImage:
    """Decode the first frame of a PNG, JPEG, TIFF, BMP or WebP with Pillow."""
    with Image.open(io.BytesIO(data), formats=[source_format]) as opened:
        width, height = opened.size
        if width < 1 or height < 1:
            raise ImageDecodeError(
                f"corrupt {source_format}: the header declares {width} x {height} pixels",
                DecodeErrorKind.CORRUPT,
            )
        check_pixel_count(width, height, limits)
        opened.load()
        image = _apply_exif_orientation(opened)
        pixels = raster_to_uint8(image)
    return DecodedImage(pixels=pixels, source_format=source_format, metadata={})


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says; a broken EXIF block is ignored."""
    try:
        transposed = ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block must not reject the pixels
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
        return image
    return image if transposed is None else transposed


def raster_to_uint8(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image → uint8 (H, W, 1) or (H, W, 3), alpha composited over black."""
    mode = image.mode
    if mode in _HIGH_DEPTH_GREY_MODES:
        return as_hwc(robust_window_to_uint8(np.asarray(image)))
    if mode == "1":
        return as_hwc(np.asarray(image.convert("L")))
    if "transparency" in image.info and mode in ("L", "P", "RGB"):
        image = image.convert("LA" if mode == "L" else "RGBA")
        mode = image.mode
    if mode in _ALPHA_MODES:
        with_alpha = np.asarray(image.convert(_ALPHA_MODES[mode]))
        return as_hwc(composite_over_black(with_alpha))
    if mode not in ("L", "RGB"):
        image = image.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX
    return as_hwc(np.asarray(image))


def composite_over_black(with_alpha: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C+1) with alpha last → uint8 (H, W, C): colour × alpha / 255, rounded."""
    colour = with_alpha[..., :-1].astype(np.uint16)
    alpha = with_alpha[..., -1:].astype(np.uint16)
    return ((colour * alpha + 127) // 255).astype(np.uint8)
