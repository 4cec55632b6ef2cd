"""A walk over a DICOM data set's elements that reads only what bounds the decode's cost.

pydicom builds a Python object for every item of every sequence it reads; a 4 MB file
whose Per-frame Functional Groups Sequence has 500,000 empty items costs it seconds and
hundreds of MB. :func:`outline_dataset` walks the encoded elements first, without
building anything: it counts sequence items (nested ones too) and stops with
``TOO_LARGE`` as soon as they pass ``max_sequence_items`` plus
:data:`~imaging.limits.ITEMS_PER_FRAME` per frame, refuses a Per-frame Functional Groups
Sequence with more items than the Number of Frames it declares (``CORRUPT``), and reads the image
attributes (rows, columns, samples, bits, frames) and where the pixel data starts, so that
sizes are known before pydicom allocates anything.

The walk never refuses what it cannot follow: an encoding it does not understand (or a
truncated one) ends the walk, and pydicom's own reading reports the problem.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from imaging.errors import DecodeErrorKind, ImageDecodeError, corrupt
from imaging.limits import ITEMS_PER_FRAME, DecodeLimits

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_PER_FRAME_GROUPS = 0x52009230
_MAX_DEPTH = 32  # nesting of sequences; deeper is refused
_IMAGE_TAGS = {
    0x00280002: "samples",
    0x00280008: "frames",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280100: "bits_allocated",
}
# Implicit VR: the tags of sequences an image's header carries (pydicom's dictionary knows
# them all, but importing it per element costs more than the walk).
_IMPLICIT_SEQUENCE_GROUPS = frozenset({0x5200})


@dataclass(frozen=True)
class Outline:
    """What the walk found; None where the attribute was absent or not reached."""

    rows: int | None
    columns: int | None
    samples: int | None
    bits_allocated: int | None
    frames: int | None
    pixel_data_offset: int | None  # where the pixel data element starts in the walked bytes
    pixel_data_length: int | None  # its value length; None if undefined (encapsulated)
    sequence_items: int
    complete: bool  # reached the pixel data or the end of the bytes without losing its way
    lost: bool  # met an encoding it does not follow (not merely the end of the bytes)

    def frame_bytes(self) -> int | None:
        """Bytes of one native frame (samples × bits allocated), if the header says."""
        if not (self.rows and self.columns and self.bits_allocated):
            return None
        samples = self.samples or 1
        return (self.rows * self.columns * samples * self.bits_allocated + 7) // 8


class _Walk:
    def __init__(
        self, data: bytes | memoryview, implicit: bool, little: bool, limits: DecodeLimits
    ):
        self.data = data
        self.implicit = implicit
        self.endian = "<" if little else ">"
        self.limits = limits
        self.items = 0
        self.found: dict[str, int] = {}
        self.pixel_offset: int | None = None
        self.pixel_length: int | None = None
        self.truncated = False

    # ---------------------------------------------------------------- elements

    def header(self, offset: int) -> tuple[int, bytes, int, int] | None:
        """(tag, VR, value length, value offset) of the element at `offset`."""
        data, endian = self.data, self.endian
        if offset + 8 > len(data):
            self.truncated = True
            return None
        group, element = struct.unpack_from(endian + "HH", data, offset)
        tag = group << 16 | element
        if group == 0xFFFE or self.implicit:
            (length,) = struct.unpack_from(endian + "I", data, offset + 4)
            return tag, b"", length, offset + 8
        vr = bytes(data[offset + 4 : offset + 6])
        if vr in _LONG_VRS:
            if offset + 12 > len(data):
                self.truncated = True
                return None
            (length,) = struct.unpack_from(endian + "I", data, offset + 8)
            return tag, vr, length, offset + 12
        if not (vr.isalpha() and vr.isupper()):
            return None  # not explicit VR after all: leave it to pydicom
        (length,) = struct.unpack_from(endian + "H", data, offset + 6)
        return tag, vr, length, offset + 8

    def elements(self, offset: int, end: int | None, depth: int, top: bool) -> int | None:
        """Walk elements from `offset` to `end` (or to an item delimiter when `end` is None);
        the offset after them, or None when the walk lost its way or stopped at the pixels."""
        while end is None or offset < end:
            if offset >= len(self.data):
                if end is not None or not top:
                    self.truncated = True
                    return None
                return offset
            parsed = self.header(offset)
            if parsed is None:
                return None
            tag, vr, length, value_at = parsed
            if tag == _ITEM_END and end is None:
                return value_at
            if top and tag in _PIXEL_DATA_TAGS:
                self.pixel_offset = offset
                self.pixel_length = None if length == _UNDEFINED else length
                return None
            if (
                vr == b"SQ"
                or length == _UNDEFINED
                or (self.implicit and tag >> 16 in _IMPLICIT_SEQUENCE_GROUPS and tag & 0xFFFF != 0)
            ):
                after = self.sequence(tag, value_at, length, depth + 1)
                if after is None:
                    return None
                offset = after
                continue
            if top and tag in _IMAGE_TAGS:
                self.record(_IMAGE_TAGS[tag], vr, value_at, length)
            offset = value_at + length
        return offset

    def record(self, name: str, vr: bytes, value_at: int, length: int) -> None:
        value = bytes(self.data[value_at : value_at + length])
        try:
            if name == "frames":  # IS: a decimal string
                number = int(value.strip(b" \x00") or b"0")
            elif length >= 2:
                (number,) = struct.unpack_from(self.endian + "H", value)
            else:
                return
        except (ValueError, struct.error):
            return
        self.found[name] = number

    # ---------------------------------------------------------------- sequences

    def sequence(self, tag: int, offset: int, length: int, depth: int) -> int | None:
        if depth > _MAX_DEPTH:
            raise corrupt(f"DICOM sequences are nested more than {_MAX_DEPTH} deep")
        end = None if length == _UNDEFINED else offset + length
        items = 0
        while end is None or offset < end:
            parsed = self.header(offset)
            if parsed is None:
                return None
            item_tag, _, item_length, value_at = parsed
            if item_tag == _SEQUENCE_END:
                offset = value_at
                break
            if item_tag != _ITEM:
                return None
            items += 1
            self.count_item(tag, items)
            if item_length == _UNDEFINED:
                after = self.elements(value_at, None, depth, top=False)
                if after is None:
                    return None
                offset = after
            else:
                if self.elements(value_at, value_at + item_length, depth, top=False) is None:
                    return None
                offset = value_at + item_length
        return offset

    def count_item(self, tag: int, items_in_sequence: int) -> None:
        self.items += 1
        declared = self.found.get("frames")
        frames = max(1, declared or 1)
        # Without Number of Frames the object is not multi-frame: per-frame groups left in a
        # frame extracted from one (pydicom ships such files) count only towards the total.
        if tag == _PER_FRAME_GROUPS and declared is not None and items_in_sequence > frames:
            raise corrupt(
                f"DICOM Per-frame Functional Groups Sequence has more items than the "
                f"{frames} frame(s) the object declares"
            )
        allowed = self.limits.max_sequence_items + ITEMS_PER_FRAME * frames
        if self.items > allowed:
            raise ImageDecodeError(
                f"DICOM header has more than {allowed} sequence items, more than this "
                "service reads for an image of its frames",
                DecodeErrorKind.TOO_LARGE,
            )


def outline_dataset(
    data: bytes | memoryview, *, implicit: bool, little_endian: bool, limits: DecodeLimits
) -> Outline:
    """Walk the data set encoded in `data` (from its first element; see the module text)."""
    walk = _Walk(data, implicit, little_endian, limits)
    try:
        after = walk.elements(0, None, 0, top=True)
    except struct.error:
        after = None
    complete = walk.pixel_offset is not None or after is not None
    found = walk.found
    return Outline(
        rows=found.get("rows"),
        columns=found.get("columns"),
        samples=found.get("samples"),
        bits_allocated=found.get("bits_allocated"),
        frames=found.get("frames"),
        pixel_data_offset=walk.pixel_offset,
        pixel_data_length=walk.pixel_length,
        sequence_items=walk.items,
        complete=complete,
        lost=not complete and not walk.truncated,
    )
