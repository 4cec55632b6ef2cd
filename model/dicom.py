"""DICOM → uint8 pixels and allowlisted, non-identifying metadata (used by :mod:`model.decoding`).

Decisions:

* **Reading.** ``pydicom.dcmread(force=True)`` on the in-memory bytes, so Part 10 files and
  preamble-less/meta-less streams are both read; nothing touches the disk. A file without
  a Transfer Syntax UID gets the one matching the encoding pydicom detected (native pixel
  data only: compressed data without a transfer syntax is ``CORRUPT``).
* **Deflate.** A Deflated Explicit VR Little Endian data set is inflated here, not by
  pydicom (which inflates it whole, with no limit): the file meta and command set are read
  with pydicom's own readers (so a file is taken as deflated exactly when pydicom would take
  it so), the body is inflated incrementally and refused as ``TOO_LARGE`` as soon as it
  passes :func:`inflated_size_limit`, and pydicom then reads the same bytes with the
  Transfer Syntax UID patched to explicit VR little endian followed by the inflated body;
  the transfer syntax is set back to deflated afterwards, so the rest of the pipeline and
  the metadata are as before. A truncated or invalid deflate stream is ``CORRUPT``.
* **Frame.** A multi-frame object shows its *middle* frame, index ``NumberOfFrames // 2``:
  the first frames of a volume or cine loop are often edge slices or run-in, the middle
  one most likely shows the anatomy. Only that frame is decoded.
* **Limits and integrity, before decoding.** ``Columns × Rows`` is checked against
  ``max_pixels``; native pixel data must hold every declared frame (so a header declaring
  60000 × 60000 over a few bytes is ``CORRUPT`` without allocating anything); a JPEG,
  JPEG-LS or JPEG 2000 frame must end with its end-of-image marker (FFD9), because some
  decoders silently return a partial image from a truncated stream.
* **Decoders.** pydicom's plugins in the order pylibjpeg, pyjpegls, pydicom, pillow; the
  first that succeeds wins. gdcm is never used: on some malformed streams it throws a
  C++ exception that aborts the whole process (found by fuzzing), which a server must
  not allow.
  Transfer syntaxes without a decoder (MPEG, HEVC, JPEG XL, private UIDs) are
  ``UNSUPPORTED``.
* **Grey (MONOCHROME1/2).** Modality first: Modality LUT Sequence, else Rescale
  Slope/Intercept (an enhanced multi-frame object's shared and then per-frame functional
  groups override the top-level values). Then VOI: the first VOI LUT Sequence item (its
  output range, min..max of the LUT, is stretched to 0..255), else the first Window
  Center/Width with VOI LUT Function LINEAR (default, PS3.3 C.11.2.1.2), LINEAR_EXACT or
  SIGMOID (C.11.2.1.3) and an output range of 0..255; else, for unsigned stored values of
  at most 8 bits with no modality transform, the stored range itself (8-bit as it is,
  1-bit → 0/255, like an 8-bit PNG); else the robust 0.5/99.5 percentile window of
  :func:`model.decoding.robust_window_to_uint8`. MONOCHROME1 is inverted last
  (255 − x) so that it looks like MONOCHROME2. An invalid window (width < 1 for LINEAR,
  ≤ 0 otherwise) is ignored.
* **Colour.** YBR_FULL and YBR_FULL_422 become RGB (pydicom); YBR_ICT/YBR_RCT come out of
  the JPEG 2000 decoder already as RGB; PALETTE COLOR goes through its LUT (16-bit LUT
  entries / 257); colour with more than 8 bits is scaled by Bits Stored.
* **Metadata allowlist.** Only the attributes in :data:`METADATA_ATTRIBUTES` (modality,
  body part, view position, laterality, study date, manufacturer and model, and image
  geometry) plus the names of the SOP class and transfer syntax, the number of frames
  and the frame shown. Because it is an allowlist, nothing on the PS3.15 basic
  de-identification list (patient name, ID, birth date, address, institution, physicians,
  accession number, study/series/instance UIDs, …) can leak into it — with one deliberate
  exception: Study Date is on that list (action Z) and is kept because retrieval results
  are compared by date; drop ``study_date`` here if dates must not be shown.
"""

from __future__ import annotations

import io
import logging
import math
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import get_frame
from pydicom.filereader import (  # pydicom's own readers, so we agree on the layout
    _read_command_set_elements,
    _read_file_meta_info,
    read_preamble,
)
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, convert_color_space
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from model.decoding import (
    DecodedImage,
    DecodeErrorKind,
    DecodeLimits,
    ImageDecodeError,
    as_hwc,
    check_pixel_count,
    is_library_panic,
    linear_window_to_uint8,
    robust_window_to_uint8,
    safe_error_text,
)

logger = logging.getLogger(__name__)

# pydicom's value checks warn (and log) with the raw value quoted, and an invalid value may
# be a patient's name or id written into the wrong element: files are decoded without them
# (a bad value that matters still fails the decode, with a message of our own).
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Decoding plugins, most preferred first. gdcm is never used: on some malformed streams it
# throws a C++ exception that aborts the whole process, which a server must not allow.
EXCLUDED_PLUGINS = frozenset({"gdcm"})
PLUGIN_PREFERENCE = ("pylibjpeg", "pyjpegls", "pydicom", "pillow")

# JPEG (EOI) and JPEG 2000 (EOC) streams both end with FFD9; tolerate a little trailing junk.
_END_OF_IMAGE_MARKER = b"\xff\xd9"
_END_MARKER_SEARCH_BYTES = 32
_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins:"

# (metadata key, DICOM keywords tried in order). The allowlist: nothing else is reported.
METADATA_ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("modality", ("Modality",)),
    ("body_part", ("BodyPartExamined",)),
    ("view_position", ("ViewPosition",)),
    ("laterality", ("ImageLaterality", "Laterality")),
    ("study_date", ("StudyDate",)),
    ("manufacturer", ("Manufacturer",)),
    ("manufacturer_model", ("ManufacturerModelName",)),
    ("photometric", ("PhotometricInterpretation",)),
    ("rows", ("Rows",)),
    ("columns", ("Columns",)),
    ("bits_stored", ("BitsStored",)),
    ("pixel_spacing", ("PixelSpacing", "ImagerPixelSpacing")),
)
_METADATA_MAX_CHARS = 128

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

# Transfer syntaxes newer than this pydicom's UID dictionary (named in error messages).
_NEWER_TRANSFER_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}

# Deflated data sets (PS3.5 A.5) are inflated here under a cap, see inflated_size_limit.
_DEFLATE_MAX_BYTES_PER_PIXEL = 8  # 64-bit float grey; 16-bit RGB is 6
_DEFLATE_NON_PIXEL_BYTES = 16 * 2**20  # everything in the data set but one frame
_INFLATE_INPUT_CHUNK = 64 * 2**10  # compressed bytes fed to zlib at a time
_INFLATE_OUTPUT_CHUNK = 2**20  # most inflated bytes zlib returns at a time
_DEFLATED_UID = DeflatedExplicitVRLittleEndian.encode("ascii")
# Same length as the deflated UID (UI values may be padded with trailing NULs).
_INFLATED_UID = ExplicitVRLittleEndian.encode("ascii").ljust(len(_DEFLATED_UID), b"\x00")
_TRANSFER_SYNTAX_TAG = 0x00020010

_GREY = ("MONOCHROME1", "MONOCHROME2")
_DECODED_AS_RGB = ("RGB", "YBR_ICT", "YBR_RCT")  # the JPEG 2000 decoder undoes ICT/RCT
_YBR_FULL = ("YBR_FULL", "YBR_FULL_422")


# --------------------------------------------------------------------------- entry point


def decode_dicom(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Decode the middle frame of the DICOM object in `data` to display-ready uint8."""
    dataset = read_dataset(data, limits)
    pixel_keyword = pixel_data_keyword(dataset)
    transfer_syntax = _transfer_syntax(dataset, pixel_keyword)
    rows, columns = _image_size(dataset)
    check_pixel_count(columns, rows, limits)
    frame_count = number_of_frames(dataset)
    frame_index = choose_frame_index(frame_count)
    decoder = _decoder_for(transfer_syntax)
    if transfer_syntax.is_encapsulated:
        _check_frame_is_complete(dataset, pixel_keyword, transfer_syntax, frame_index, frame_count)
    else:
        _check_native_length(dataset, pixel_keyword, rows, columns, frame_count)
    frame, photometric = _decode_frame(decoder, dataset, transfer_syntax, frame_index, frame_count)
    pixels = display_pixels(frame, photometric, dataset, frame_index)
    metadata = describe_dicom(dataset, transfer_syntax, frame_index, frame_count)
    return DecodedImage(pixels=pixels, source_format="DICOM", metadata=metadata)


def read_dataset(data: bytes, limits: DecodeLimits) -> Dataset:
    """pydicom's reading of `data`; a deflated data set is inflated here first, under a cap."""
    inflated = _inflate_deflated_dataset(data, limits)
    if inflated is None:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    dataset = pydicom.dcmread(io.BytesIO(inflated), force=True)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # as it was declared
    return dataset


def inflated_size_limit(limits: DecodeLimits) -> int:
    """The most bytes a deflated data set may inflate to.

    As much as an uncompressed upload may be (``max_bytes``), or one native frame at the
    pixel limit with up to 8 bytes per pixel (64-bit float grey; 16-bit RGB is 6) plus
    16 MiB for the other elements, whichever is larger: 779 MiB with the default limits.
    Deflate reaches about 1000:1, so without a cap a 1 MiB upload could take 1 GiB.
    """
    per_frame = limits.max_pixels * _DEFLATE_MAX_BYTES_PER_PIXEL + _DEFLATE_NON_PIXEL_BYTES
    return max(limits.max_bytes, per_frame)


def _inflate_deflated_dataset(data: bytes, limits: DecodeLimits) -> bytes | None:
    """`data` with its deflated data set inflated, or ``None`` if it is not deflated.

    pydicom's own readers find the file meta and command set, so a file is treated as
    deflated exactly when ``pydicom.dcmread`` would inflate it. The result is the same
    bytes up to the data set, with the Transfer Syntax UID value patched in place to
    explicit VR little endian (same length, NUL-padded), followed by the inflated data set.
    """
    stream = io.BytesIO(data)  # shares `data`'s buffer, no copy
    read_preamble(stream, True)
    file_meta = _read_file_meta_info(stream)
    meta_end = stream.tell()
    _read_command_set_elements(stream)
    body_start = stream.tell()
    if body_start >= len(data):  # nothing after the meta: pydicom inflates nothing either
        return None
    if file_meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
        return None
    uid_offset = _deflated_uid_offset(data, file_meta, meta_end)
    body = _inflate(memoryview(data)[body_start:], inflated_size_limit(limits))
    logger.debug("inflated a deflated DICOM data set to %d bytes", sum(map(len, body)))
    end = uid_offset + len(_DEFLATED_UID)
    return b"".join((data[:uid_offset], _INFLATED_UID, data[end:body_start], *body))


def _deflated_uid_offset(data: bytes, file_meta: FileMetaDataset, meta_end: int) -> int:
    """Where the deflated UID's bytes are in the Transfer Syntax UID value pydicom read."""
    element = file_meta.get_item(_TRANSFER_SYNTAX_TAG)
    value_offset = getattr(element, "value_tell", None)
    if value_offset is None:  # an element pydicom has already converted
        value_offset = getattr(element, "file_tell", None)
    offset = -1
    if isinstance(value_offset, int):
        offset = data.find(_DEFLATED_UID, value_offset, meta_end)
    if offset < 0:  # never inflate without the cap: refuse what we cannot patch
        raise _corrupt("deflated DICOM has a Transfer Syntax UID that cannot be located")
    return offset


def _inflate(compressed: memoryview, limit: int) -> list[bytes]:
    """Raw deflate (PS3.5 A.5) inflated in pieces; ``TOO_LARGE`` once past `limit` bytes.

    The pieces are returned unjoined (joining once, with the meta, saves a copy); at most
    ``limit`` + 1 MiB is ever held, so a bomb is refused after inflating ``limit`` bytes.
    Data after the end of the deflate stream is ignored, as ``zlib.decompress`` (and so
    pydicom) ignores it.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pieces: list[bytes] = []
    size = 0
    try:
        for start in range(0, len(compressed), _INFLATE_INPUT_CHUNK):
            pending: bytes | memoryview = compressed[start : start + _INFLATE_INPUT_CHUNK]
            while not inflater.eof:
                piece = inflater.decompress(pending, _INFLATE_OUTPUT_CHUNK)
                size += len(piece)
                if size > limit:
                    raise ImageDecodeError(
                        f"deflated DICOM inflates past {limit} bytes "
                        f"({limit / 2**20:.1f} MiB), the most a data set may have",
                        DecodeErrorKind.TOO_LARGE,
                    )
                if piece:
                    pieces.append(piece)
                pending = inflater.unconsumed_tail
                if not pending and len(piece) < _INFLATE_OUTPUT_CHUNK:
                    break  # this input is used up and zlib holds no more output
            if inflater.eof:
                break
    except zlib.error as exc:
        raise _corrupt(f"corrupt deflated DICOM data set: {safe_error_text(str(exc))}") from None
    if not inflater.eof:
        raise _corrupt(
            f"truncated deflated DICOM data set: the deflate stream ends early "
            f"(after {len(compressed)} compressed and {size} inflated bytes)"
        )
    return pieces


def choose_frame_index(frame_count: int) -> int:
    """The frame shown for a multi-frame object: the middle one."""
    return frame_count // 2


# --------------------------------------------------------------------------- header checks


def pixel_data_keyword(dataset: Dataset) -> str:
    """The keyword of the pixel data element; ``CORRUPT`` if there is none."""
    for keyword in PIXEL_DATA_KEYWORDS:
        if keyword in dataset:
            if not dataset[keyword].value:
                raise _corrupt("DICOM pixel data element is empty")
            return keyword
    raise _corrupt(f"DICOM has no pixel data (SOP class: {_sop_class_name(dataset)})")


def _transfer_syntax(dataset: Dataset, pixel_keyword: str) -> UID:
    """The transfer syntax of the pixel data; guessed from the encoding if the meta lacks it."""
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is None:
        file_meta = dataset.file_meta = FileMetaDataset()
    declared = str(file_meta.get("TransferSyntaxUID") or "").strip(" \x00")
    if declared:
        return UID(declared)
    if _is_encapsulated(dataset, pixel_keyword):
        raise _corrupt("DICOM has compressed pixel data but no transfer syntax to say how")
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


def _image_size(dataset: Dataset) -> tuple[int, int]:
    rows = _int_attribute(dataset, "Rows")
    columns = _int_attribute(dataset, "Columns")
    if not rows or not columns or rows < 1 or columns < 1:
        raise _corrupt(f"DICOM image has no valid size (Rows={rows}, Columns={columns})")
    return rows, columns


def number_of_frames(dataset: Dataset) -> int:
    """Number of Frames; absent, empty or 0 means one frame (as pydicom assumes)."""
    frames = _int_attribute(dataset, "NumberOfFrames")
    if frames is None or frames == 0:
        return 1
    if frames < 0:
        raise _corrupt(f"invalid Number of Frames {frames}")
    return frames


def _int_attribute(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _corrupt(f"invalid {keyword} {str(value)[:40]!r}") from None


def _decoder_for(transfer_syntax: UID) -> Decoder:
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise _unsupported_transfer_syntax(transfer_syntax) from None
    if not decoder.is_available:
        raise _unsupported_transfer_syntax(transfer_syntax, "no decoder is installed")
    return decoder


def transfer_syntax_name(transfer_syntax: UID) -> str | None:
    """The standard name of `transfer_syntax`, or ``None`` for an unknown/private UID."""
    if transfer_syntax.name != str(transfer_syntax):
        return transfer_syntax.name
    return _NEWER_TRANSFER_SYNTAX_NAMES.get(str(transfer_syntax))


def _unsupported_transfer_syntax(transfer_syntax: UID, reason: str = "") -> ImageDecodeError:
    name = transfer_syntax_name(transfer_syntax)
    if name is not None:
        label = f"{name} ({transfer_syntax})"
    else:
        label = f"{uid_text(transfer_syntax)} (unknown or private UID)"
    suffix = f": {reason}" if reason else ""
    return ImageDecodeError(
        f"unsupported transfer syntax {label}{suffix}", DecodeErrorKind.UNSUPPORTED
    )


def _check_native_length(
    dataset: Dataset, pixel_keyword: str, rows: int, columns: int, frame_count: int
) -> None:
    """Native pixel data must hold every declared frame; checked before any allocation."""
    samples = _int_attribute(dataset, "SamplesPerPixel") or 1
    bits = _int_attribute(dataset, "BitsAllocated")
    if not bits or bits < 1:
        raise _corrupt(f"DICOM image has no valid Bits Allocated ({bits})")
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    stored_samples = 2 if photometric == "YBR_FULL_422" and samples == 3 else samples
    needed = math.ceil(rows * columns * stored_samples * bits * frame_count / 8)
    available = len(dataset[pixel_keyword].value)
    if available < needed:
        raise _corrupt(
            f"DICOM declares {frame_count} frame(s) of {columns} x {rows} pixels x {samples} "
            f"sample(s) x {bits} bits = {needed} bytes, but holds only {available} bytes of "
            "pixel data"
        )


def _check_frame_is_complete(
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
        raise _corrupt(
            f"truncated {codec} stream: frame {frame_index} of the DICOM pixel data has no "
            "end-of-image marker"
        )


def _extended_offsets(dataset: Dataset) -> tuple[Any, Any] | None:
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        return (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)
    return None


def codec_name(transfer_syntax: UID) -> str:
    """A person's name for the compression of `transfer_syntax` ("native" if none)."""
    if transfer_syntax in JPEG2000TransferSyntaxes:
        return "JPEG 2000"
    if transfer_syntax in JPEGLSTransferSyntaxes:
        return "JPEG-LS"
    if transfer_syntax in JPEGTransferSyntaxes:
        return "JPEG"
    if transfer_syntax == RLELossless:
        return "RLE"
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return "deflate"
    return "native"


# --------------------------------------------------------------------------- decoding


def _decode_frame(
    decoder: Decoder,
    dataset: Dataset,
    transfer_syntax: UID,
    frame_index: int,
    frame_count: int,
) -> tuple[np.ndarray, str]:
    """Decode one frame; returns it with the photometric interpretation it now has."""
    options = as_pixel_options(dataset, number_of_frames=frame_count)
    if decoder.is_native:
        frame, properties = decoder.as_array(dataset, index=frame_index, **options)
        return frame, str(properties["photometric_interpretation"])
    failures: list[str] = []
    for plugin in _plugins_in_preferred_order(decoder):
        try:
            frame, properties = decoder.as_array(
                dataset, index=frame_index, decoding_plugin=plugin, **options
            )
        except MemoryError:
            raise
        except BaseException as exc:  # try the next plugin; report the first failure
            if not isinstance(exc, Exception) and not is_library_panic(exc):
                raise  # KeyboardInterrupt, SystemExit, …
            failures.append(_plugin_failure(plugin, exc))
            logger.debug("DICOM plugin %s failed: %s", plugin, exc)
            continue
        return frame, str(properties["photometric_interpretation"])
    detail = failures[0] if failures else "no decoding plugin"
    raise _corrupt(f"truncated or corrupt {codec_name(transfer_syntax)} stream: {detail[:300]}")


def _plugin_failure(plugin: str, exc: BaseException) -> str:
    """One line naming the plugin, without pydicom's "raised by all plugins" preamble."""
    text = safe_error_text(str(exc).replace(_ALL_PLUGINS_FAILED, "")).strip()
    return text if text.startswith(f"{plugin}:") else f"{plugin}: {text}"


def _plugins_in_preferred_order(decoder: Decoder) -> list[str]:
    def rank(name: str) -> int:
        known = name in PLUGIN_PREFERENCE
        return PLUGIN_PREFERENCE.index(name) if known else len(PLUGIN_PREFERENCE)

    usable = [name for name in decoder.available_plugins if name not in EXCLUDED_PLUGINS]
    return sorted(usable, key=rank)


def display_pixels(
    frame: np.ndarray, photometric: str, dataset: Dataset, frame_index: int
) -> np.ndarray:
    """A decoded frame → uint8 (H, W, 1) grey or (H, W, 3) RGB."""
    if photometric in _GREY:
        if frame.ndim != 2:
            raise _corrupt(f"{photometric} image has {frame.shape[-1]} samples per pixel")
        return as_hwc(grey_to_uint8(frame, dataset, frame_index, photometric))
    if photometric == "PALETTE COLOR":
        if frame.ndim != 2:
            raise _corrupt(f"PALETTE COLOR image has {frame.shape[-1]} samples per pixel")
        return palette_to_rgb(frame, dataset)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise _corrupt(f"{photometric} image does not have 3 samples per pixel")
    if photometric in _DECODED_AS_RGB:
        return as_hwc(colour_to_uint8(frame, dataset))
    if photometric in _YBR_FULL:
        return as_hwc(convert_color_space(colour_to_uint8(frame, dataset), photometric, "RGB"))
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
    """Colour samples → uint8, scaling more than 8 bits by Bits Stored."""
    if frame.dtype == np.uint8:
        return frame
    values = frame.astype(np.float64)
    bits = _int_attribute(dataset, "BitsStored") or frame.dtype.itemsize * 8
    if np.issubdtype(frame.dtype, np.signedinteger):
        values += 2.0 ** (bits - 1)
    if values.size and values.max() >= 2.0**bits:  # Bits Stored understates the data
        bits = frame.dtype.itemsize * 8
    return linear_window_to_uint8(values, 0.0, 2.0**bits - 1)


# --------------------------------------------------------------------------- grey pipeline


def grey_to_uint8(
    frame: np.ndarray, dataset: Dataset, frame_index: int, photometric: str
) -> np.ndarray:
    """Modality LUT → VOI (LUT, window, stored range or percentiles) → MONOCHROME1 inversion."""
    transforms = frame_transforms(dataset, frame_index)
    values = apply_modality_lut(frame, transforms)
    shown = _apply_voi(values, frame, transforms)
    return 255 - shown if photometric == "MONOCHROME1" else shown


def _apply_voi(values: np.ndarray, frame: np.ndarray, transforms: Dataset) -> np.ndarray:
    lut_item = _voi_lut_item(transforms)
    if lut_item is not None:
        return apply_voi_lut_item(values, lut_item, transforms)
    window = first_window(transforms)
    if window is not None:
        return apply_window(values, *window)
    if _is_plain_low_depth(frame, transforms):
        bits = _int_attribute(transforms, "BitsStored") or 8
        return linear_window_to_uint8(frame, 0.0, 2.0**bits - 1)
    return robust_window_to_uint8(values)


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


def apply_voi_lut_item(values: np.ndarray, item: Dataset, transforms: Dataset) -> np.ndarray:
    """Map `values` through a VOI LUT, then stretch the LUT's output range to 0..255.

    Done here rather than with ``pydicom.pixels.apply_voi``, whose index array takes the
    LUT's dtype and so wraps for 8-bit LUTs with more than 256 entries.
    """
    entry_count, first_mapped = _lut_geometry(item, values, transforms)
    lut = lut_entries(item, transforms)[:entry_count]
    indices = np.rint(np.nan_to_num(np.asarray(values, dtype=np.float64))) - first_mapped
    indices = np.clip(indices, 0, lut.size - 1).astype(np.intp)
    low, high = float(lut.min()), float(lut.max())
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    return linear_window_to_uint8(lut[indices], low, high)


def _lut_geometry(item: Dataset, values: np.ndarray, transforms: Dataset) -> tuple[int, int]:
    descriptor = [int(v) for v in item.LUTDescriptor]
    entry_count = descriptor[0] or 2**16
    first_mapped = descriptor[1]
    signed_input = transforms.get("PixelRepresentation") == 1 or bool(
        values.size and float(np.nanmin(values)) < 0
    )
    if first_mapped > 2**15 - 1 and signed_input:
        first_mapped -= 2**16  # an SS value read as US
    return entry_count, first_mapped


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
        raise _corrupt("DICOM VOI LUT has no entries")
    return entries.astype(np.float64)


def first_window(transforms: Dataset) -> tuple[float, float, str] | None:
    """(center, width, function) of the first valid window, or ``None``."""
    center = _first_number(transforms.get("WindowCenter"))
    width = _first_number(transforms.get("WindowWidth"))
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


def _first_number(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value:
            return None
        value = value[0]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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
    bits = _int_attribute(transforms, "BitsStored")
    if bits is None or bits > 8 or not np.issubdtype(frame.dtype, np.unsignedinteger):
        return False
    if transforms.get("ModalityLUTSequence"):
        return False
    slope = _first_number(transforms.get("RescaleSlope"))
    intercept = _first_number(transforms.get("RescaleIntercept"))
    return slope in (None, 1.0) and intercept in (None, 0.0)


# --------------------------------------------------------------------------- metadata


def describe_dicom(
    dataset: Dataset, transfer_syntax: UID, frame_index: int, frame_count: int
) -> dict[str, str]:
    """The allowlisted, non-identifying metadata of `dataset`, as strings."""
    metadata: dict[str, str] = {}
    for key, keywords in METADATA_ATTRIBUTES:
        text = _first_metadata_text(dataset, keywords)
        if text:
            metadata[key] = text
    metadata["number_of_frames"] = str(frame_count)
    metadata["frame_index"] = str(frame_index)
    sop_class = _sop_class_name(dataset)
    if sop_class != "unknown":
        metadata["sop_class"] = sop_class
    name = transfer_syntax_name(transfer_syntax) or uid_text(transfer_syntax)
    metadata["transfer_syntax"] = _metadata_text(name) or "unknown"
    return metadata


def _first_metadata_text(dataset: Dataset, keywords: tuple[str, ...]) -> str | None:
    for keyword in keywords:
        try:
            text = _metadata_text(dataset.get(keyword))
        except Exception:  # an unreadable value is left out, never fatal
            logger.debug("leaving out unreadable DICOM %s", keyword)
            continue
        if text:
            return text
    return None


def _metadata_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        text = "\\".join(str(v) for v in value)
    elif isinstance(value, bytes):
        return None
    else:
        text = str(value)
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return text[:_METADATA_MAX_CHARS] or None


def uid_text(uid: object) -> str:
    """A UID as text when it is a well-formed UID (digits and dots, ≤ 64 characters);
    "malformed UID" otherwise — a malformed value may hold anything, identifiers included."""
    text = str(uid or "").strip(" \x00")
    return text if _WELL_FORMED_UID.fullmatch(text) else "malformed UID"


_WELL_FORMED_UID = re.compile(r"(?=.{1,64}$)[0-9]+(\.[0-9]+)*")


def _sop_class_name(dataset: Dataset) -> str:
    try:
        uid = dataset.get("SOPClassUID") or dataset.file_meta.get("MediaStorageSOPClassUID")
        text = uid_text(uid)
        if text == "malformed UID":
            return "unknown"
        return _metadata_text(UID(text).name) or "unknown"
    except Exception:  # only used in messages and metadata
        return "unknown"


def _corrupt(message: str) -> ImageDecodeError:
    return ImageDecodeError(message, DecodeErrorKind.CORRUPT)
