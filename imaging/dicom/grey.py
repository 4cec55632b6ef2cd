"""Grey (MONOCHROME1/2) DICOM frames → uint8: modality, then VOI, then inversion.

* **Modality.** Modality LUT Sequence, else Rescale Slope/Intercept (an enhanced
  multi-frame object's shared and then per-frame functional groups override the
  top-level values).
* **VOI.** The first VOI LUT Sequence item (its output range, min..max of the LUT, is
  stretched to 0..255), else the first Window Center/Width with VOI LUT Function LINEAR
  (default, PS3.3 C.11.2.1.2), LINEAR_EXACT or SIGMOID (C.11.2.1.3) and an output range
  of 0..255; else, for unsigned stored values of at most 8 bits with no modality
  transform, the stored range itself (8-bit as it is, 1-bit → 0/255, like an 8-bit PNG);
  else the robust 0.5/99.5 percentile window of
  :func:`imaging.windowing.robust_window_to_uint8`. An invalid window (width < 1 for
  LINEAR, ≤ 0 otherwise) is ignored.
* **MONOCHROME1** is inverted last (255 − x) so that it looks like MONOCHROME2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut

from imaging.dicom.attributes import first_number, int_attribute
from imaging.errors import corrupt
from imaging.windowing import (
    BLOCK_ELEMENTS,
    linear_window_block,
    map_row_blocks,
    percentile_sample,
    robust_bounds_of_sample,
)

logger = logging.getLogger(__name__)

# Attributes that shape the grey pipeline, and the functional-group sequences of enhanced
# multi-frame objects that may override them per frame.
_GREY_TRANSFORM_KEYWORDS = frozenset(
    {
        "RescaleSlope",
        "RescaleIntercept",
        "RescaleType",
        "ModalityLUTSequence",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "VOILUTSequence",
        "PixelRepresentation",
        "BitsStored",
        "PhotometricInterpretation",
    }
)
_FUNCTIONAL_GROUP_TRANSFORMS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def grey_to_uint8(
    frame: np.ndarray, dataset: Dataset, frame_index: int, photometric: str
) -> np.ndarray:
    """Modality LUT → VOI (LUT, window, stored range or percentiles) → MONOCHROME1 inversion.

    Every per-pixel step runs block by block (:func:`imaging.windowing.map_row_blocks`), so
    the modality values of the whole frame are never held at once; the statistics a step
    needs (the robust window, the VOI LUT's signedness) are taken first, over the frame.
    """
    transforms = frame_transforms(dataset, frame_index)
    shade = _voi_step(frame, transforms)
    shown = map_row_blocks(frame, lambda block: shade(modality_values(block, transforms)))
    if photometric == "MONOCHROME1":
        np.subtract(255, shown, out=shown)
    return shown


def modality_values(frame: np.ndarray, transforms: Dataset) -> np.ndarray:
    """The Modality LUT (PS3.3 C.11.1) of `frame` (or of a block of it).

    A Modality LUT Sequence maps through the LUT (pydicom). Rescale Slope/Intercept
    (absent: 1 and 0) leave the frame as it is when they change nothing, and stay in
    integers when both are integers and every result fits in int32 (a CT's HU); only a
    fractional slope or intercept widens to float64, as pydicom does.
    """
    if transforms.get("ModalityLUTSequence"):
        return apply_modality_lut(frame, transforms)
    slope = first_number(transforms.get("RescaleSlope"))
    intercept = first_number(transforms.get("RescaleIntercept"))
    if "RescaleSlope" not in transforms or "RescaleIntercept" not in transforms:
        return frame  # pydicom rescales only when both are present
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    if slope == 1.0 and intercept == 0.0:
        return frame
    if _integer_rescale_fits(frame, slope, intercept):
        values = frame.astype(np.int32)
        if slope != 1.0:
            values *= int(slope)
        values += int(intercept)
        return values
    return apply_modality_lut(frame, transforms)


def _integer_rescale_fits(frame: np.ndarray, slope: float, intercept: float) -> bool:
    if not (slope.is_integer() and intercept.is_integer()):
        return False
    if not np.issubdtype(frame.dtype, np.integer) or frame.dtype.itemsize > 2:
        return False
    info = np.iinfo(frame.dtype)
    ends = (info.min * slope + intercept, info.max * slope + intercept)
    limit = np.iinfo(np.int32)
    return all(limit.min <= end <= limit.max for end in ends)


def _voi_step(frame: np.ndarray, transforms: Dataset) -> Callable[[np.ndarray], np.ndarray]:
    """The VOI stage as a function of modality values (a block of them) → uint8."""
    lut_item = _voi_lut_item(transforms)
    if lut_item is not None:
        signed_input = transforms.get("PixelRepresentation") == 1 or _has_negative_values(
            frame, transforms
        )
        lut = voi_lut(lut_item, transforms, signed_input)
        return lut.apply
    window = first_window(transforms)
    if window is not None:
        return lambda values: apply_window(values, *window)
    if _is_plain_low_depth(frame, transforms):
        bits = int_attribute(transforms, "BitsStored") or 8
        top = 2.0**bits - 1
        return lambda values: linear_window_block(values, 0.0, top)
    sample = modality_values(percentile_sample(frame), transforms)
    low, high = robust_bounds_of_sample(sample)
    if not high > low:
        return lambda values: np.zeros(values.shape, dtype=np.uint8)
    return lambda values: linear_window_block(values, low, high)


def _has_negative_values(frame: np.ndarray, transforms: Dataset) -> bool:
    """Whether some modality value of `frame` is below 0 (NaN ignored), block by block."""
    rows_per_block = max(1, BLOCK_ELEMENTS // max(1, frame[:1].size))
    for start in range(0, frame.shape[0], rows_per_block):
        block = modality_values(frame[start : start + rows_per_block], transforms)
        if block.size and float(np.nanmin(block)) < 0:
            return True
    return False


def frame_transforms(dataset: Dataset, frame_index: int) -> Dataset:
    """The grey-pipeline attributes that apply to one frame.

    Top-level values, overridden by the shared and then the per-frame functional groups of
    an enhanced multi-frame object (Pixel Value Transformation, Frame VOI LUT).
    """
    transforms = Dataset()
    transforms.file_meta = dataset.file_meta
    transforms.set_original_encoding(*dataset.original_encoding)
    for keyword in _GREY_TRANSFORM_KEYWORDS:
        if keyword in dataset:
            element = dataset[keyword]
            transforms[element.tag] = element
    for group in _functional_groups(dataset, frame_index):
        for sequence_keyword in _FUNCTIONAL_GROUP_TRANSFORMS:
            items = group.get(sequence_keyword)
            if not items:
                continue
            for element in items[0]:
                if element.keyword in _GREY_TRANSFORM_KEYWORDS:
                    transforms[element.tag] = element
    return transforms


def _functional_groups(dataset: Dataset, frame_index: int) -> list[Dataset]:
    groups: list[Dataset] = []
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame_index < len(per_frame):
        groups.append(per_frame[frame_index])
    return groups


def _voi_lut_item(transforms: Dataset) -> Dataset | None:
    items = transforms.get("VOILUTSequence")
    if not items:
        return None
    item = items[0]
    if item.get("LUTDescriptor") is None or item.get("LUTData") is None:
        return None
    return item


@dataclass(frozen=True)
class VoiLut:
    """A VOI LUT ready to apply: its entries, the first mapped value, its output range."""

    entries: np.ndarray  # float64
    first_mapped: int
    low: float
    high: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Map `values` through the LUT, then stretch the LUT's output range to 0..255.

        Done here rather than with ``pydicom.pixels.apply_voi``, whose index array takes
        the LUT's dtype and so wraps for 8-bit LUTs with more than 256 entries.
        """
        if not self.high > self.low:
            return np.zeros(values.shape, dtype=np.uint8)
        indices = np.rint(np.nan_to_num(np.asarray(values, dtype=np.float64)))
        indices -= self.first_mapped
        np.clip(indices, 0, self.entries.size - 1, out=indices)
        return linear_window_block(self.entries[indices.astype(np.intp)], self.low, self.high)


def voi_lut(item: Dataset, transforms: Dataset, signed_input: bool) -> VoiLut:
    """The VOI LUT of a VOI LUT Sequence item; `signed_input`: the values it maps may be
    negative (a first mapped value over 32767 is then an SS value read as US)."""
    descriptor = [int(v) for v in item.LUTDescriptor]
    entry_count = descriptor[0] or 2**16
    first_mapped = descriptor[1]
    if first_mapped > 2**15 - 1 and signed_input:
        first_mapped -= 2**16
    entries = lut_entries(item, transforms)[:entry_count]
    return VoiLut(entries, first_mapped, float(entries.min()), float(entries.max()))


def lut_entries(item: Dataset, transforms: Dataset) -> np.ndarray:
    """The entries of a LUT item's LUT Data (US values, or OW words in the file's byte order)."""
    data = item.LUTData
    if isinstance(data, bytes):
        big_endian = transforms.original_encoding[1] is False
        entries = np.frombuffer(data[: len(data) // 2 * 2], dtype=">u2" if big_endian else "<u2")
    elif isinstance(data, Sequence):
        entries = np.asarray(list(data), dtype=np.int64)
    else:
        entries = np.asarray([data], dtype=np.int64)
    if entries.size == 0:
        raise corrupt("DICOM VOI LUT has no entries")
    return entries.astype(np.float64)


def first_window(transforms: Dataset) -> tuple[float, float, str] | None:
    """(center, width, function) of the first valid window, or ``None``."""
    center = first_number(transforms.get("WindowCenter"))
    width = first_number(transforms.get("WindowWidth"))
    if center is None or width is None:
        return None
    function = str(transforms.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        logger.debug("unknown VOI LUT Function %r, using LINEAR", function)
        function = "LINEAR"
    if width < 1 if function == "LINEAR" else width <= 0:
        logger.debug("ignoring invalid window width %s for %s", width, function)
        return None
    return center, width, function


def apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2/C.11.2.1.3 window with an output range of 0..255."""
    x = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if function == "SIGMOID":
            y = 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
        elif function == "LINEAR_EXACT":
            y = ((x - center) / width + 0.5) * 255.0
        elif width == 1:  # LINEAR with width 1 is a threshold at center - 0.5
            y = np.where(x <= center - 0.5, 0.0, 255.0)
        else:
            y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    np.clip(y, 0.0, 255.0, out=y)
    np.nan_to_num(y, copy=False, nan=0.0)
    return np.rint(y).astype(np.uint8)


def _is_plain_low_depth(frame: np.ndarray, transforms: Dataset) -> bool:
    """Unsigned integers of at most 8 stored bits that no modality transform changes."""
    bits = int_attribute(transforms, "BitsStored")
    if bits is None or bits > 8 or not np.issubdtype(frame.dtype, np.unsignedinteger):
        return False
    if transforms.get("ModalityLUTSequence"):
        return False
    slope = first_number(transforms.get("RescaleSlope"))
    intercept = first_number(transforms.get("RescaleIntercept"))
    return slope in (None, 1.0) and intercept in (None, 0.0)
