"""PNG chunks that change no pixel, dropped before Pillow reads a file.

Text (``tEXt``, ``zTXt``, ``iTXt``) and the ICC profile (``iCCP``) are never used by the
decoder, but Pillow inflates them and refuses the whole image when one inflates past
``PngImagePlugin.MAX_TEXT_CHUNK``; a text chunk may also hold a patient's name. They are
removed whole (chunk boundaries are kept, so no CRC changes). A file whose chunk
structure does not parse is returned as it is, for Pillow to report.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
UNUSED_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"iCCP"})
_CHUNK_FRAME = 12  # length (4) + type (4) + CRC (4) around the chunk's data


def without_unused_chunks(data: bytes) -> bytes:
    """`data` without its :data:`UNUSED_CHUNKS`; the same object when it has none."""
    spans = _chunk_spans(data)
    if spans is None or not any(kind in UNUSED_CHUNKS for kind, _, _ in spans):
        return data
    kept = [data[: len(PNG_SIGNATURE)]]
    kept += [data[start:end] for kind, start, end in spans if kind not in UNUSED_CHUNKS]
    return b"".join(kept)


def _chunk_spans(data: bytes) -> list[tuple[bytes, int, int]] | None:
    """(type, start, end) of each chunk up to IEND, or None if the structure is broken."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    spans: list[tuple[bytes, int, int]] = []
    offset = len(PNG_SIGNATURE)
    while offset + _CHUNK_FRAME <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        end = offset + _CHUNK_FRAME + length
        if length > 2**31 - 1 or end > len(data):
            return None
        spans.append((kind, offset, end))
        offset = end
        if kind == b"IEND":
            return spans
    return None
