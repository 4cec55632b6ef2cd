"""PNG, JPEG, TIFF, BMP and WebP → uint8 pixels, with Pillow.

The first frame of multi-frame TIFF/WebP. EXIF orientation is applied for every format
that carries EXIF (JPEG, TIFF, WebP, and PNG ``eXIf``); a broken EXIF block is ignored,
not fatal. Alpha (including palette and ``tRNS`` transparency) is composited over black
and dropped. 8-bit grey and RGB stay as they are; palette, CMYK and YCbCr become RGB;
1-bit becomes 0/255. Grey with more than 8 bits (16-bit, 32-bit integer ``I``, float
``F``) is windowed by :func:`imaging.windowing.robust_window_to_uint8`.

Memory: the decoded size (width × height × bands × bytes per band) is checked against
``max_decoded_bytes`` from the header, and the decode holds its share of the decode budget
(:func:`imaging.limits.decode_cost` of Pillow's storage and ours) before Pillow allocates.
The image is then held once by Pillow, once as a numpy array and once as the uint8
result: orientation is applied in place, a mode is converted only when it differs, and
alpha is composited block by block. PNG text and ICC-profile chunks (``tEXt``, ``zTXt``,
``iTXt``, ``iCCP``) are dropped before Pillow reads the file (:mod:`imaging.png_chunks`):
none changes a pixel, and Pillow refuses a whole image whose text inflates past its limit.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageOps

from imaging.errors import DecodeErrorKind, ImageDecodeError
from imaging.limits import DecodeLimits, check_decoded_bytes, check_pixel_count, decode_cost
from imaging.pixels import DecodedImage, as_hwc
from imaging.png_chunks import without_unused_chunks
from imaging.windowing import map_row_blocks, robust_window_to_uint8

logger = logging.getLogger(__name__)

_HIGH_DEPTH_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = {"LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}
_BYTES_PER_BAND = {"I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}
_ONE_BYTE_STORAGE = frozenset({"1", "L", "P"})  # Pillow stores every other mode in 2 or 4


def decode_raster(data: bytes, source_format: str, limits: DecodeLimits) -> DecodedImage:
    """Decode the first frame of a PNG, JPEG, TIFF, BMP or WebP with Pillow."""
    if source_format == "PNG":
        data = without_unused_chunks(data)
    with Image.open(io.BytesIO(data), formats=[source_format]) as opened:
        width, height = opened.size
        if width < 1 or height < 1:
            raise ImageDecodeError(
                f"corrupt {source_format}: the header declares {width} x {height} pixels",
                DecodeErrorKind.CORRUPT,
            )
        check_pixel_count(width, height, limits)
        with limits.reserved(raster_cost(opened.mode, width, height, limits), source_format):
            opened.load()
            _apply_exif_orientation(opened)
            pixels = raster_to_uint8(opened)
    return DecodedImage(pixels=pixels, source_format=source_format, metadata={})


def raster_cost(mode: str, width: int, height: int, limits: DecodeLimits) -> int:
    """The decode's share of the budget; ``TOO_LARGE`` if the decoded samples are over
    ``max_decoded_bytes``."""
    bands = Image.getmodebands(mode) if mode in Image.MODES else 4
    band_bytes = _BYTES_PER_BAND.get(mode, 1)
    decoded = width * height * bands * band_bytes
    check_decoded_bytes(
        decoded,
        f"{width} x {height} pixels x {bands} band(s) x {band_bytes} byte(s)",
        limits,
    )
    storage = width * height * (1 if mode in _ONE_BYTE_STORAGE else max(4, band_bytes))
    channels = 1 if bands < 3 and mode != "P" else 3
    return decode_cost(decoded, width * height, channels, copies=1) + storage


def _apply_exif_orientation(image: Image.Image) -> None:
    """Rotate/flip in place as the EXIF Orientation tag says; a broken EXIF block is ignored."""
    try:
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as exc:  # a broken EXIF block must not reject the pixels
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)


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
        wanted = _ALPHA_MODES[mode]
        with_alpha = np.asarray(image if mode == wanted else image.convert(wanted))
        return as_hwc(composite_over_black(with_alpha))
    if mode not in ("L", "RGB"):
        image = image.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX
    return as_hwc(np.asarray(image))


def composite_over_black(with_alpha: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C+1) with alpha last → uint8 (H, W, C): colour × alpha / 255, rounded."""
    return map_row_blocks(with_alpha, _composite_block)


def _composite_block(with_alpha: np.ndarray) -> np.ndarray:
    colour = with_alpha[..., :-1].astype(np.uint16)
    colour *= with_alpha[..., -1:]
    colour += 127
    colour //= 255
    return colour
