"""DICOM transfer syntaxes: every one we decode gives the stored values back, the rest are
refused by name, and a cut-short compressed stream is ``CORRUPT`` naming its codec.

Fixtures are generated with pydicom (RLE natively, JPEG-LS via pyjpegls, JPEG 2000 via
pylibjpeg-openjpeg), Pillow (baseline JPEG, encapsulated by pydicom) and a small lossless
JPEG (process 14) encoder below.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from imaging.decode import DecodeErrorKind, decode_image
from support.decoding import decode_dataset, decode_error, grey_out, rgb_out
from support.dicom import (
    PYDICOM_TEST_FILES,
    encapsulated,
    grey16,
    make_dataset,
    pillow_jpeg,
    ramp,
    smooth_rgb,
    to_bytes,
)

HEVC_MAIN_PROFILE = UID("1.2.840.10008.1.2.4.107")
MPEG2_MAIN_PROFILE = UID("1.2.840.10008.1.2.4.100")
GREY16 = grey16()


# --------------------------------------------------------------------------- lossless JPEG


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self._accumulator = 0
        self._count = 0

    def write(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self._accumulator = (self._accumulator << 1) | ((value >> shift) & 1)
            self._count += 1
            if self._count == 8:
                self._emit()

    def _emit(self) -> None:
        self.out.append(self._accumulator)
        if self._accumulator == 0xFF:
            self.out.append(0x00)  # byte stuffing
        self._accumulator = 0
        self._count = 0

    def flush(self) -> bytes:
        while self._count:
            self.write(1, 1)  # pad with 1-bits
        return bytes(self.out)


def _predict(image: list[list[list[int]]], y: int, x: int, c: int, predictor: int, p: int) -> int:
    """ITU T.81 H.1.2.1 prediction (point transform 0)."""
    if y == 0 and x == 0:
        return 1 << (p - 1)
    if y == 0:
        return image[y][x - 1][c]
    if x == 0:
        return image[y - 1][x][c]
    ra, rb, rc = image[y][x - 1][c], image[y - 1][x][c], image[y - 1][x - 1][c]
    return {
        1: ra,
        2: rb,
        3: rc,
        4: ra + rb - rc,
        5: ra + ((rb - rc) >> 1),
        6: rb + ((ra - rc) >> 1),
        7: (ra + rb) >> 1,
    }[predictor]


def encode_lossless_jpeg(pixels: np.ndarray, precision: int, predictor: int = 1) -> bytes:
    """A process-14 lossless JPEG (SOF3) of unsigned (H, W) or (H, W, C) samples.

    One Huffman table gives every difference category 0..16 a 5-bit code (code = category).
    """
    samples = pixels if pixels.ndim == 3 else pixels[:, :, np.newaxis]
    rows, columns, components = samples.shape
    image: list[list[list[int]]] = samples.astype(np.int64).tolist()

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    frame = bytes([precision]) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big")
    frame += bytes([components]) + b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))
    huffman = bytes([0x00]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    scan = bytes([components]) + b"".join(bytes([i + 1, 0x00]) for i in range(components))
    scan += bytes([predictor, 0, 0])

    writer = _BitWriter()
    for y in range(rows):
        for x in range(columns):
            for c in range(components):
                difference = (
                    image[y][x][c] - _predict(image, y, x, c, predictor, precision)
                ) % 65536
                if difference >= 32768 and difference != 32768:
                    difference -= 65536
                category = 16 if difference == 32768 else abs(difference).bit_length()
                writer.write(category, 5)
                if 0 < category < 16:
                    extra = difference if difference > 0 else difference - 1
                    writer.write(extra & ((1 << category) - 1), category)
    entropy = writer.flush()
    return (
        b"\xff\xd8"
        + segment(0xC3, frame)
        + segment(0xC4, huffman)
        + segment(0xDA, scan)
        + entropy
        + b"\xff\xd9"
    )


# --------------------------------------------------------------------------- transfer syntaxes


def _compressed(transfer_syntax: UID, **options: Any) -> Callable[[np.ndarray], Dataset]:
    def build(pixels: np.ndarray) -> Dataset:
        ds = make_dataset(pixels, bits_stored=12)
        ds.compress(transfer_syntax, **options)
        return ds

    return build


def _written_as(transfer_syntax: UID) -> Callable[[np.ndarray], Dataset]:
    def build(pixels: np.ndarray) -> Dataset:
        ds = make_dataset(pixels, bits_stored=12)
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        if transfer_syntax == ExplicitVRBigEndian:
            ds.PixelData = pixels.astype(">u2").tobytes()
        return ds

    return build


def _lossless_jpeg(transfer_syntax: UID, predictor: int) -> Callable[[np.ndarray], Dataset]:
    def build(pixels: np.ndarray) -> Dataset:
        ds = make_dataset(pixels, bits_stored=12)
        return encapsulated(ds, [encode_lossless_jpeg(pixels, 12, predictor)], transfer_syntax)

    return build


LOSSLESS_GREY_SYNTAXES = {
    "explicit VR little endian": _written_as(ExplicitVRLittleEndian),
    "implicit VR little endian": _written_as(ImplicitVRLittleEndian),
    "explicit VR big endian": _written_as(ExplicitVRBigEndian),
    "deflated explicit VR little endian": _written_as(DeflatedExplicitVRLittleEndian),
    "RLE lossless": _compressed(RLELossless),
    "JPEG-LS lossless": _compressed(JPEGLSLossless),
    "JPEG 2000 lossless": _compressed(JPEG2000Lossless),
    "JPEG lossless SV1 (process 14, predictor 1)": _lossless_jpeg(JPEGLosslessSV1, 1),
    "JPEG lossless (process 14, predictor 7)": _lossless_jpeg(JPEGLossless, 7),
}


@pytest.mark.parametrize("name", list(LOSSLESS_GREY_SYNTAXES))
def test_lossless_transfer_syntaxes_give_back_the_stored_values(name: str) -> None:
    ds = LOSSLESS_GREY_SYNTAXES[name](GREY16)
    ds.WindowCenter, ds.WindowWidth = 2000.5, 4001  # LINEAR: x → x * 255 / 4000
    decoded = decode_dataset(ds)
    expected = np.rint(np.clip(GREY16 / 4000.0, 0, 1) * 255)
    assert decoded.pixels.shape == (32, 32, 1)
    assert np.array_equal(decoded.pixels[:, :, 0], expected.astype(np.uint8))
    assert decoded.metadata["transfer_syntax"] == ds.file_meta.TransferSyntaxUID.name


@pytest.mark.parametrize(
    ("transfer_syntax", "options"),
    [(JPEGLSNearLossless, {"jls_error": 3}), (JPEG2000, {"j2k_cr": [4]})],
    ids=["JPEG-LS near-lossless", "JPEG 2000 lossy"],
)
def test_lossy_transfer_syntaxes_are_close(transfer_syntax: UID, options: dict[str, Any]) -> None:
    ds = make_dataset(GREY16, bits_stored=12, WindowCenter=2000.5, WindowWidth=4001)
    ds.compress(transfer_syntax, **options)
    expected = np.clip(GREY16 / 4000.0, 0, 1) * 255
    error = np.abs(grey_out(ds).astype(np.float64) - expected)
    assert error.max() <= 4
    assert error.mean() < 1.5


@pytest.mark.parametrize("transfer_syntax", [JPEGBaseline8Bit, JPEGExtended12Bit])
def test_jpeg_baseline_and_extended_grey(transfer_syntax: UID) -> None:
    pixels = ramp(32, 48, 255, np.uint8)
    ds = encapsulated(make_dataset(pixels), [pillow_jpeg(pixels)], transfer_syntax)
    assert np.abs(grey_out(ds).astype(int) - pixels).max() <= 4


def test_shipped_jpeg_extended_12_bit_decodes() -> None:
    decoded = decode_image((PYDICOM_TEST_FILES / "JPGExtended.dcm").read_bytes())
    assert decoded.pixels.shape == (1024, 256, 1)
    assert decoded.pixels.max() == 255
    assert decoded.metadata["transfer_syntax"] == "JPEG Extended (Process 2 and 4)"


def test_lossless_jpeg_rgb_and_16_bit() -> None:
    rgb = smooth_rgb()
    ds = encapsulated(make_dataset(rgb, "RGB"), [encode_lossless_jpeg(rgb, 8)], JPEGLosslessSV1)
    assert np.array_equal(rgb_out(ds), rgb)
    wide = ramp(16, 16, 65535, np.uint16)
    ds = encapsulated(make_dataset(wide), [encode_lossless_jpeg(wide, 16)], JPEGLosslessSV1)
    out = grey_out(ds)  # no window: the percentile window spreads the ramp over 0..255
    assert out[0, 0] == 0
    assert out[-1, -1] == 255
    assert np.all(np.diff(out.reshape(-1).astype(int)) >= 0)


# --------------------------------------------------------------------------- refused and truncated


@pytest.mark.parametrize(
    ("transfer_syntax", "fragment"),
    [
        (MPEG2_MAIN_PROFILE, "MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)"),
        (HEVC_MAIN_PROFILE, "HEVC/H.265 Main Profile / Level 5.1 (1.2.840.10008.1.2.4.107)"),
        (UID("1.2.840.10008.1.2.4.112"), "JPEG XL (1.2.840.10008.1.2.4.112)"),
        (UID("1.2.3.4.5.6.7"), "1.2.3.4.5.6.7 (unknown or private UID)"),
    ],
)
def test_unsupported_transfer_syntax(transfer_syntax: UID, fragment: str) -> None:
    written_as = transfer_syntax
    if transfer_syntax.startswith("1.2.840.10008.") and not transfer_syntax.is_transfer_syntax:
        written_as = MPEG2_MAIN_PROFILE  # pydicom will not write a standard UID it does not know
    ds = encapsulated(make_dataset(np.zeros((8, 8), np.uint8)), [b"\x00" * 64], written_as)
    data = to_bytes(ds).replace(written_as.encode(), transfer_syntax.encode())  # same length
    error = decode_error(data)
    assert error.kind is DecodeErrorKind.UNSUPPORTED
    assert str(error) == f"unsupported transfer syntax {fragment}"


@pytest.mark.parametrize(
    ("transfer_syntax", "codec"),
    [(JPEG2000Lossless, "JPEG 2000"), (JPEGLSLossless, "JPEG-LS"), (RLELossless, "RLE")],
)
def test_truncated_compressed_stream_is_corrupt_and_names_the_codec(
    transfer_syntax: UID, codec: str
) -> None:
    ds = make_dataset(GREY16, bits_stored=12)
    ds.compress(transfer_syntax)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) * 2 // 3]])
    error = decode_error(to_bytes(ds))
    assert error.kind is DecodeErrorKind.CORRUPT
    assert f"{codec} stream" in str(error)
    assert "truncated" in str(error)


def test_truncated_jpeg_baseline_dicom_is_corrupt() -> None:
    pixels = ramp(32, 32, 255, np.uint8)
    jpeg = pillow_jpeg(pixels)
    ds = encapsulated(make_dataset(pixels), [jpeg[: len(jpeg) // 2]], JPEGBaseline8Bit)
    error = decode_error(to_bytes(ds))
    assert error.kind is DecodeErrorKind.CORRUPT
    assert "truncated JPEG stream" in str(error)


def test_compressed_pixel_data_without_transfer_syntax_is_corrupt() -> None:
    ds = encapsulated(make_dataset(GREY16, bits_stored=12), [b"\xff\xd8\xff\xd9"], RLELossless)
    del ds.file_meta.TransferSyntaxUID
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    error = decode_error(buffer.getvalue())
    assert error.kind is DecodeErrorKind.CORRUPT
