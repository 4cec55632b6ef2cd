"""Deflated Explicit VR Little Endian data sets (PS3.5 A.5), inflated under a cap.

pydicom inflates a deflated data set whole, with no limit, and deflate reaches about
1000:1. So it is inflated here instead: the file meta and command set are read with
pydicom's own readers (so a file is taken as deflated exactly when pydicom would take it
so), the body is inflated incrementally and refused as ``TOO_LARGE`` as soon as it passes
:func:`inflated_size_limit`, and pydicom then reads the same bytes with the Transfer
Syntax UID patched to explicit VR little endian followed by the inflated body (the
caller sets the transfer syntax back to deflated afterwards, so the rest of the pipeline
and the metadata are as before). A truncated or invalid deflate stream is ``CORRUPT``.
"""

from __future__ import annotations

import io
import logging
import zlib

from pydicom.dataset import FileMetaDataset
from pydicom.filereader import (  # pydicom's own readers, so we agree on the layout
    _read_command_set_elements,
    _read_file_meta_info,
    read_preamble,
)
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from imaging.errors import DecodeErrorKind, ImageDecodeError, corrupt, safe_error_text
from imaging.limits import DecodeLimits

logger = logging.getLogger(__name__)

_DEFLATE_MAX_BYTES_PER_PIXEL = 8  # 64-bit float grey; 16-bit RGB is 6
_DEFLATE_NON_PIXEL_BYTES = 16 * 2**20  # everything in the data set but one frame
_INFLATE_INPUT_CHUNK = 64 * 2**10  # compressed bytes fed to zlib at a time
_INFLATE_OUTPUT_CHUNK = 2**20  # most inflated bytes zlib returns at a time
_DEFLATED_UID = DeflatedExplicitVRLittleEndian.encode("ascii")
# Same length as the deflated UID (UI values may be padded with trailing NULs).
_INFLATED_UID = ExplicitVRLittleEndian.encode("ascii").ljust(len(_DEFLATED_UID), b"\x00")
_TRANSFER_SYNTAX_TAG = 0x00020010


def inflated_size_limit(limits: DecodeLimits) -> int:
    """The most bytes a deflated data set may inflate to.

    As much as an uncompressed upload may be (``max_bytes``), or one native frame at the
    pixel limit with up to 8 bytes per pixel (64-bit float grey; 16-bit RGB is 6) plus
    16 MiB for the other elements, whichever is larger: 779 MiB with the default limits.
    Deflate reaches about 1000:1, so without a cap a 1 MiB upload could take 1 GiB.
    """
    per_frame = limits.max_pixels * _DEFLATE_MAX_BYTES_PER_PIXEL + _DEFLATE_NON_PIXEL_BYTES
    return max(limits.max_bytes, per_frame)


def inflate_deflated_dataset(data: bytes, limits: DecodeLimits) -> bytes | None:
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
        raise corrupt("deflated DICOM has a Transfer Syntax UID that cannot be located")
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
        raise corrupt(f"corrupt deflated DICOM data set: {safe_error_text(str(exc))}") from None
    if not inflater.eof:
        raise corrupt(
            f"truncated deflated DICOM data set: the deflate stream ends early "
            f"(after {len(compressed)} compressed and {size} inflated bytes)"
        )
    return pieces
