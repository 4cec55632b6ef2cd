"""A decoded DICOM frame → uint8 (H, W, 1) grey or (H, W, 3) RGB, by photometric interpretation.

Grey goes through :mod:`imaging.dicom.grey`. YBR_FULL and YBR_FULL_422 become RGB
(pydicom); YBR_ICT/YBR_RCT come out of the JPEG 2000 decoder already as RGB; PALETTE
COLOR goes through its LUT (16-bit LUT entries / 257); colour with more than 8 bits is
scaled by Bits Stored.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut, convert_color_space

from imaging.dicom.attributes import int_attribute
from imaging.dicom.grey import grey_to_uint8
from imaging.errors import DecodeErrorKind, ImageDecodeError, corrupt
from imaging.pixels import as_hwc
from imaging.windowing import linear_window_block, map_row_blocks

_GREY = ("MONOCHROME1", "MONOCHROME2")
_DECODED_AS_RGB = ("RGB", "YBR_ICT", "YBR_RCT")  # the JPEG 2000 decoder undoes ICT/RCT
_YBR_FULL = ("YBR_FULL", "YBR_FULL_422")


def display_pixels(
    frame: np.ndarray, photometric: str, dataset: Dataset, frame_index: int
) -> np.ndarray:
    """A decoded frame → uint8 (H, W, 1) grey or (H, W, 3) RGB."""
    if photometric in _GREY:
        if frame.ndim != 2:
            raise corrupt(f"{photometric} image has {frame.shape[-1]} samples per pixel")
        return as_hwc(grey_to_uint8(frame, dataset, frame_index, photometric))
    if photometric == "PALETTE COLOR":
        if frame.ndim != 2:
            raise corrupt(f"PALETTE COLOR image has {frame.shape[-1]} samples per pixel")
        return palette_to_rgb(frame, dataset)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise corrupt(f"{photometric} image does not have 3 samples per pixel")
    if photometric in _DECODED_AS_RGB:
        return as_hwc(colour_to_uint8(frame, dataset))
    if photometric in _YBR_FULL:
        return as_hwc(ybr_to_rgb(colour_to_uint8(frame, dataset), photometric))
    raise ImageDecodeError(
        f"unsupported photometric interpretation {photometric!r}", DecodeErrorKind.UNSUPPORTED
    )


def palette_to_rgb(frame: np.ndarray, dataset: Dataset) -> np.ndarray:
    """PALETTE COLOR indices → uint8 RGB through the palette LUTs."""
    rgb = apply_color_lut(frame, dataset)[..., :3]
    if rgb.dtype == np.uint8:
        return as_hwc(rgb)
    descriptor = dataset.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 16]
    if int(descriptor[2]) == 8:  # 8-bit values stored in 16-bit words
        return as_hwc(np.minimum(rgb, 255).astype(np.uint8))
    return as_hwc(((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8))


def colour_to_uint8(frame: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Colour samples → uint8, scaling more than 8 bits by Bits Stored.

    Signed samples are offset by half the range; data that Bits Stored understates is
    scaled by the dtype's bits. The maximum is taken on the integers, and the scaling runs
    block by block, so the frame is never widened whole to float.
    """
    if frame.dtype == np.uint8:
        return frame
    bits = int_attribute(dataset, "BitsStored") or frame.dtype.itemsize * 8
    signed = np.issubdtype(frame.dtype, np.signedinteger)
    offset = 2.0 ** (bits - 1) if signed else 0.0
    if frame.size and float(frame.max()) + offset >= 2.0**bits:  # Bits Stored understates
        bits = frame.dtype.itemsize * 8
    low = -offset  # a signed value v is shown as v + offset on 0 .. 2**bits - 1
    return map_row_blocks(frame, lambda block: _scaled_block(block, low, 2.0**bits - 1 + low))


def _scaled_block(block: np.ndarray, low: float, high: float) -> np.ndarray:
    return linear_window_block(block.astype(np.float64), low, high)


def ybr_to_rgb(pixels: np.ndarray, photometric: str) -> np.ndarray:
    """uint8 YBR_FULL / YBR_FULL_422 → RGB (pydicom's conversion), block by block."""
    return map_row_blocks(pixels, lambda block: convert_color_space(block, photometric, "RGB"))
