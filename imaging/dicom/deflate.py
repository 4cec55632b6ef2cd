"""Deflated Explicit VR Little Endian data sets (PS3.5 A.5), inflated under a cap that the
header sets.

pydicom inflates a deflated data set whole, with no limit, and deflate reaches about
1000:1. So it is inflated here instead, in two steps:

1. :func:`open_deflated` inflates only the elements before the pixel data (at most
   :data:`HEADER_MAX_BYTES`) and walks them (:func:`imaging.dicom.outline.outline_dataset`),
   so the image's size is known — and checked by the caller — before its pixels are
   inflated.
2. :meth:`DeflatedDataset.inflated` inflates the rest, refused as ``TOO_LARGE`` as soon
   as it passes :meth:`DeflatedDataset.cap`: the header's elements, the pixel data the
   header says every frame needs (rows × columns × samples × bits allocated × frames; a
   longer Pixel Data element may add :data:`SLACK_BYTES`), and :data:`SLACK_BYTES` of
   elements after it.

The file meta and command set are read with pydicom's own readers (so a file is taken as
deflated exactly when pydicom would take it so). pydicom then reads the same bytes with
the Transfer Syntax UID patched to explicit VR little endian followed by the inflated
body (the caller sets the transfer syntax back to deflated afterwards, so the rest of the
pipeline and the metadata are as before). A truncated or invalid deflate stream is
``CORRUPT``.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

from pydicom.dataset import FileMetaDataset

from imaging.dicom.outline import Outline, outline_dataset
from imaging.errors import DecodeErrorKind, ImageDecodeError, corrupt, safe_error_text
from imaging.limits import DecodeLimits

logger = logging.getLogger(__name__)

HEADER_MAX_BYTES = 16 * 2**20  # every element before the pixel data
SLACK_BYTES = 4 * 2**20  # pixel data beyond the frames' need; elements after the pixel data
_PIXEL_ELEMENT_HEADER = 12  # tag, VR, reserved, 4-byte length (OB/OW, explicit VR)
_HEADER_STEP = 2**20  # inflated bytes added before the header is walked again
_INFLATE_INPUT_CHUNK = 64 * 2**10  # compressed bytes fed to zlib at a time
_INFLATE_OUTPUT_CHUNK = 2**20  # most inflated bytes zlib returns at a time
_DEFLATED_UID = b"1.2.840.10008.1.2.1.99"
# Same length as the deflated UID (UI values may be padded with trailing NULs).
_INFLATED_UID = b"1.2.840.10008.1.2.1".ljust(len(_DEFLATED_UID), b"\x00")
_TRANSFER_SYNTAX_TAG = 0x00020010


class _Inflater:
    """Raw deflate (PS3.5 A.5) inflated in pieces, on demand, never past a cap."""

    def __init__(self, compressed: memoryview) -> None:
        self._compressed = compressed
        self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
        self._next_input = 0
        self._pending: bytes | memoryview = b""
        self.pieces: list[bytes] = []
        self.size = 0

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    def inflate_to(self, size: int, cap: int, cap_reason: str) -> None:
        """Inflate until `size` bytes are out (or the stream ends); ``TOO_LARGE`` past `cap`.

        Data after the end of the deflate stream is ignored, as ``zlib.decompress`` (and
        so pydicom) ignores it.
        """
        try:
            while self.size < size and not self._zlib.eof:
                if not self._pending:
                    if self._next_input >= len(self._compressed):
                        raise corrupt(
                            f"truncated deflated DICOM data set: the deflate stream ends "
                            f"early (after {len(self._compressed)} compressed and "
                            f"{self.size} inflated bytes)"
                        )
                    start = self._next_input
                    self._pending = self._compressed[start : start + _INFLATE_INPUT_CHUNK]
                    self._next_input = start + _INFLATE_INPUT_CHUNK
                piece = self._zlib.decompress(self._pending, _INFLATE_OUTPUT_CHUNK)
                self._pending = self._zlib.unconsumed_tail
                if piece:
                    self.size += len(piece)
                    if self.size > cap:
                        raise ImageDecodeError(
                            f"deflated DICOM inflates past {cap} bytes ({cap / 2**20:.1f} "
                            f"MiB), {cap_reason}",
                            DecodeErrorKind.TOO_LARGE,
                        )
                    self.pieces.append(piece)
        except zlib.error as exc:
            raise corrupt(f"corrupt deflated DICOM data set: {safe_error_text(str(exc))}") from None

    def joined(self) -> bytes:
        joined = b"".join(self.pieces)
        self.pieces = [joined]
        return joined


@dataclass
class DeflatedDataset:
    """A deflated data set whose header is inflated and walked, its pixels not yet."""

    head: bytes  # the file up to the data set, with the transfer syntax patched
    outline: Outline  # of the inflated elements so far (complete once the pixels are found)
    max_decoded_bytes: int
    _inflater: _Inflater = field(repr=False)

    def cap(self) -> int:
        """The most bytes the data set may inflate to (see the module text)."""
        outline = self.outline
        if outline.pixel_data_offset is None:
            if outline.lost:  # the walk could not follow the header: the limits' bound
                return HEADER_MAX_BYTES + limits_bound(self.max_decoded_bytes)
            return self._inflater.size + SLACK_BYTES  # no pixel data: only other elements
        declared = outline.pixel_data_length or 0
        frame_bytes = outline.frame_bytes()
        if frame_bytes is not None:
            declared = min(declared, frame_bytes * max(1, outline.frames or 1) + SLACK_BYTES)
        return outline.pixel_data_offset + _PIXEL_ELEMENT_HEADER + declared + SLACK_BYTES

    def inflated(self) -> bytes:
        """The whole file as pydicom should read it: the head, then the inflated body."""
        cap = self.cap()
        self._inflater.inflate_to(
            cap + 1,
            cap,
            "more than its header says the image needs (rows x columns x samples x bits x frames)",
        )
        pieces, self._inflater.pieces = self._inflater.pieces, []
        logger.debug("inflated a deflated DICOM data set to %d bytes", self._inflater.size)
        return b"".join((self.head, *pieces))  # one copy; the pieces go with this frame


def limits_bound(max_decoded_bytes: int) -> int:
    """Pixel data of at most ``max_decoded_bytes``, and :data:`SLACK_BYTES` after it."""
    return max_decoded_bytes + SLACK_BYTES


def open_deflated(
    data: bytes, file_meta: FileMetaDataset, meta_end: int, body_start: int, limits: DecodeLimits
) -> DeflatedDataset:
    """Inflate and walk the elements before the pixel data of a deflated data set."""
    uid_offset = _deflated_uid_offset(data, file_meta, meta_end)
    end = uid_offset + len(_DEFLATED_UID)
    head = b"".join((data[:uid_offset], _INFLATED_UID, data[end:body_start]))
    inflater = _Inflater(memoryview(data)[body_start:])
    reason = f"and its elements before the pixel data are over {HEADER_MAX_BYTES // 2**20} MiB"
    while True:
        inflater.inflate_to(inflater.size + _HEADER_STEP, HEADER_MAX_BYTES, reason)
        outline = outline_dataset(
            inflater.joined(), implicit=False, little_endian=True, limits=limits
        )
        if outline.pixel_data_offset is not None or inflater.eof or outline.lost:
            return DeflatedDataset(head, outline, limits.max_decoded_bytes, inflater)


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
