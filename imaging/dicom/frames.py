"""The pixel data of a DICOM object: which element, what size, which frame, and whether
it is complete — all decided from the header, before any pixel is decoded.

* **Transfer syntax.** A file without a Transfer Syntax UID gets the one matching the
  encoding pydicom detected (native pixel data only: compressed data without a transfer
  syntax is ``CORRUPT``).
* **Frame.** A multi-frame object shows its *middle* frame, index ``NumberOfFrames // 2``:
  the first frames of a volume or cine loop are often edge slices or run-in, the middle
  one most likely shows the anatomy. Only that frame is decoded.
* **Integrity.** Native pixel data must hold every declared frame (so a header declaring
  60000 × 60000 over a few bytes is ``CORRUPT`` without allocating anything); a JPEG,
  JPEG-LS or JPEG 2000 frame must end with its end-of-image marker (FFD9), because some
  decoders silently return a partial image from a truncated stream.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imaging.dicom.attributes import int_attribute
from imaging.dicom.codecs import codec_name
from imaging.dicom.metadata import sop_class_name
from imaging.errors import corrupt

logger = logging.getLogger(__name__)

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# JPEG (EOI) and JPEG 2000 (EOC) streams both end with FFD9; tolerate a little trailing junk.
_END_OF_IMAGE_MARKER = b"\xff\xd9"
_END_MARKER_SEARCH_BYTES = 32


def pixel_data_keyword(dataset: Dataset) -> str:
    """The keyword of the pixel data element; ``CORRUPT`` if there is none."""
    for keyword in PIXEL_DATA_KEYWORDS:
        if keyword in dataset:
            if not dataset[keyword].value:
                raise corrupt("DICOM pixel data element is empty")
            return keyword
    raise corrupt(f"DICOM has no pixel data (SOP class: {sop_class_name(dataset)})")


def pixel_transfer_syntax(dataset: Dataset, pixel_keyword: str) -> UID:
    """The transfer syntax of the pixel data; guessed from the encoding if the meta lacks it."""
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is None:
        file_meta = dataset.file_meta = FileMetaDataset()
    declared = str(file_meta.get("TransferSyntaxUID") or "").strip(" \x00")
    if declared:
        return UID(declared)
    if _is_encapsulated(dataset, pixel_keyword):
        raise corrupt("DICOM has compressed pixel data but no transfer syntax to say how")
    is_implicit, is_little_endian = dataset.original_encoding
    if is_implicit:
        guessed = ImplicitVRLittleEndian
    else:
        guessed = ExplicitVRLittleEndian if is_little_endian is not False else ExplicitVRBigEndian
    file_meta.TransferSyntaxUID = guessed
    logger.debug("DICOM without transfer syntax: read as %s", guessed.name)
    return guessed


def _is_encapsulated(dataset: Dataset, pixel_keyword: str) -> bool:
    element = dataset[pixel_keyword]
    value = element.value
    starts_with_item = isinstance(value, bytes) and value[:4] == b"\xfe\xff\x00\xe0"
    return bool(getattr(element, "is_undefined_length", False)) or starts_with_item


def image_size(dataset: Dataset) -> tuple[int, int]:
    """(Rows, Columns); ``CORRUPT`` unless both are positive."""
    rows = int_attribute(dataset, "Rows")
    columns = int_attribute(dataset, "Columns")
    if not rows or not columns or rows < 1 or columns < 1:
        raise corrupt(f"DICOM image has no valid size (Rows={rows}, Columns={columns})")
    return rows, columns


def number_of_frames(dataset: Dataset) -> int:
    """Number of Frames; absent, empty or 0 means one frame (as pydicom assumes)."""
    frames = int_attribute(dataset, "NumberOfFrames")
    if frames is None or frames == 0:
        return 1
    if frames < 0:
        raise corrupt(f"invalid Number of Frames {frames}")
    return frames


def choose_frame_index(frame_count: int) -> int:
    """The frame shown for a multi-frame object: the middle one."""
    return frame_count // 2


def check_native_length(
    dataset: Dataset, pixel_keyword: str, rows: int, columns: int, frame_count: int
) -> None:
    """Native pixel data must hold every declared frame; checked before any allocation."""
    samples = int_attribute(dataset, "SamplesPerPixel") or 1
    bits = int_attribute(dataset, "BitsAllocated")
    if not bits or bits < 1:
        raise corrupt(f"DICOM image has no valid Bits Allocated ({bits})")
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    stored_samples = 2 if photometric == "YBR_FULL_422" and samples == 3 else samples
    needed = math.ceil(rows * columns * stored_samples * bits * frame_count / 8)
    available = len(dataset[pixel_keyword].value)
    if available < needed:
        raise corrupt(
            f"DICOM declares {frame_count} frame(s) of {columns} x {rows} pixels x {samples} "
            f"sample(s) x {bits} bits = {needed} bytes, but holds only {available} bytes of "
            "pixel data"
        )


def check_frame_is_complete(
    dataset: Dataset,
    pixel_keyword: str,
    transfer_syntax: UID,
    frame_index: int,
    frame_count: int,
) -> None:
    """A JPEG-family frame must end with FFD9, else its stream was cut short."""
    codec = codec_name(transfer_syntax)
    if codec not in ("JPEG", "JPEG-LS", "JPEG 2000"):
        return
    frame = get_frame(
        dataset[pixel_keyword].value,
        frame_index,
        extended_offsets=_extended_offsets(dataset),
        number_of_frames=frame_count,
    )
    tail = frame.rstrip(b"\x00")[-_END_MARKER_SEARCH_BYTES:]
    if _END_OF_IMAGE_MARKER not in tail:
        raise corrupt(
            f"truncated {codec} stream: frame {frame_index} of the DICOM pixel data has no "
            "end-of-image marker"
        )


def _extended_offsets(dataset: Dataset) -> tuple[Any, Any] | None:
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        return (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)
    return None
