"""Small uploads that are expensive to decode: the corpus of the decode-budget tests and of
``bench/decode_memory.py``.

Each builder returns the file's bytes without ever holding its decoded pixels: deflated and
RLE pixel data of zeros are written as repeated compressed pieces, so a 384 MB image costs a
few hundred KB and a few milliseconds to build. :data:`CORPUS` names each case with the
size of the decoded image as uint8 (rows × columns × samples of 8 bits), the figure the
memory goal is stated in.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from support.dicom import make_dataset, raw_deflate, split_part10, to_bytes


def _header_of(rows: int, columns: int, samples: int, bits: int) -> bytes:
    """The data set (explicit VR little endian) of an image of this size, without pixel data."""
    photometric = "RGB" if samples == 3 else "MONOCHROME2"
    dtype = np.uint16 if bits == 16 else np.uint8
    shape = (1, 1, 3) if samples == 3 else (1, 1)
    ds = make_dataset(np.zeros(shape, dtype), photometric)
    del ds.PixelData
    ds.Rows, ds.Columns = rows, columns
    return split_part10(to_bytes(ds))[1]


def _pixel_data_element(length: int, vr: bytes = b"OW") -> bytes:
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, length)


def deflated_image(rows: int, columns: int, samples: int = 3, bits: int = 16) -> bytes:
    """A deflated explicit VR little endian DICOM of zero pixels (a few hundred KB)."""
    pixel_bytes = rows * columns * samples * bits // 8
    header = _header_of(rows, columns, samples, bits) + _pixel_data_element(pixel_bytes)
    ds = make_dataset(np.zeros((1, 1), np.uint8))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = split_part10(to_bytes(ds))[0]
    mib = 2**20
    zero_mib = raw_deflate(bytes(mib), final=False)
    tail = raw_deflate(bytes(pixel_bytes % mib), final=False)
    body = raw_deflate(header, final=False) + zero_mib * (pixel_bytes // mib) + tail
    return meta + body + raw_deflate(b"")


def rle_grey16(rows: int, columns: int) -> bytes:
    """An RLE Lossless 16-bit grey DICOM of zero pixels: two PackBits segments of runs."""
    pixels = rows * columns
    runs, rest = divmod(pixels, 128)
    segment = b"\x81\x00" * runs + (bytes([257 - rest, 0]) if rest > 1 else b"\x00\x00" * rest)
    if len(segment) % 2:
        segment += b"\x00"
    header = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13))
    frame = header + segment + segment
    ds = make_dataset(np.zeros((1, 1), np.uint16))
    ds.Rows, ds.Columns = rows, columns
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def functional_groups_flood(items: int, rows: int = 64, columns: int = 64) -> bytes:
    """A one-frame DICOM whose Per-frame Functional Groups Sequence has `items` empty items."""
    ds = make_dataset(np.zeros((rows, columns), np.uint8), NumberOfFrames=1)
    meta, body = split_part10(to_bytes(ds))
    pixel_at = body.index(struct.pack("<HH", 0x7FE0, 0x0010))
    sequence = (
        struct.pack("<HH2sHI", 0x5200, 0x9230, b"SQ", 0, 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0) * items
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    return meta + body[:pixel_at] + sequence + body[pixel_at:]


def constant_png(side: int, mode: str, *, zlib_level: int = 9) -> bytes:
    """A PNG of `side` × `side` constant pixels (RGBA, I;16, RGB, …)."""
    image = Image.new(mode, (side, side), 1 if mode.startswith("I") else None)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=zlib_level)
    return buffer.getvalue()


def png_with_ancillary(chunk: bytes, payload_bytes: int, side: int = 32) -> bytes:
    """A valid RGB PNG carrying a zTXt or iCCP chunk of `payload_bytes` deflated zeros,
    right after its header chunk."""
    image = Image.new("RGB", (side, side), (200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    keyword = {b"zTXt": b"Comment", b"iCCP": b"profile"}[chunk]
    data = keyword + b"\x00\x00" + zlib.compress(bytes(payload_bytes), 9)
    crc = zlib.crc32(chunk + data)
    header_end = 8 + 12 + 13  # signature, IHDR chunk
    extra = struct.pack(">I", len(data)) + chunk + data + struct.pack(">I", crc)
    return png[:header_end] + extra + png[header_end:]


def constant_jpeg(side: int) -> bytes:
    """A baseline RGB JPEG of `side` × `side` constant pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 60, 30)).save(buffer, format="JPEG", quality=50)
    return buffer.getvalue()


@dataclass(frozen=True)
class ExpensiveInput:
    name: str
    build: Callable[[], bytes]
    uint8_bytes: int  # rows × columns × samples: the decoded image as uint8 (0 if refused early)


CORPUS: tuple[ExpensiveInput, ...] = (
    ExpensiveInput("deflated DICOM, RGB 16-bit 8000²", lambda: deflated_image(8000, 8000), 0),
    ExpensiveInput(
        "deflated DICOM, RGB 16-bit 4000²", lambda: deflated_image(4000, 4000), 4000**2 * 3
    ),
    ExpensiveInput(
        "deflated DICOM, grey 16-bit 8000²",
        lambda: deflated_image(8000, 8000, samples=1),
        8000**2,
    ),
    ExpensiveInput("RLE DICOM, grey 16-bit 8000²", lambda: rle_grey16(8000, 8000), 8000**2),
    ExpensiveInput(
        "DICOM, 500,000-item functional groups", lambda: functional_groups_flood(500_000), 0
    ),
    ExpensiveInput("PNG, RGBA 4000²", lambda: constant_png(4000, "RGBA"), 4000**2 * 3),
    ExpensiveInput("PNG, grey 16-bit 8000²", lambda: constant_png(8000, "I;16"), 8000**2),
    ExpensiveInput("JPEG, RGB 8000²", lambda: constant_jpeg(8000), 8000**2 * 3),
)
