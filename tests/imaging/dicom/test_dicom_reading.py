"""Reading DICOM: files without preamble or meta, the frame shown, the header checks made
before decoding (pixel data present, sizes within the limits) and deflated data sets.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from imaging.decode import DecodeErrorKind, DecodeLimits, decode_image, sniff_format
from imaging.dicom.deflate import HEADER_MAX_BYTES, SLACK_BYTES
from imaging.dicom.reading import configure_pydicom, read_dataset
from support.decoding import decode_dataset, decode_error
from support.dicom import (
    PYDICOM_TEST_FILES,
    deflate_bomb,
    grey16,
    make_dataset,
    ramp,
    raw_deflate,
    split_part10,
    to_bytes,
)

REPO = Path(__file__).resolve().parents[3]
GREY16 = grey16()


# --------------------------------------------------------------------------- pydicom settings

_SETTINGS_SCRIPT = """
import sys
from pydicom import config
default = config.settings.reading_validation_mode
from imaging.decode import decode_image
import imaging.dicom.decode
assert config.settings.reading_validation_mode == default, "changed by an import"
decode_image(open(sys.argv[1], "rb").read())
assert config.settings.reading_validation_mode == config.IGNORE, "not applied by a decode"
print(default != config.IGNORE)
"""


def test_pydicom_settings_are_applied_by_the_first_decode_not_by_an_import() -> None:
    # A clean interpreter: this one has decoded DICOM already.
    shipped = str(PYDICOM_TEST_FILES / "CT_small.dcm")
    result = subprocess.run(
        [sys.executable, "-c", _SETTINGS_SCRIPT, shipped],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"  # pydicom's default is not IGNORE


def test_configure_pydicom_is_idempotent() -> None:
    configure_pydicom()
    configure_pydicom()
    assert pydicom_config.settings.reading_validation_mode == pydicom_config.IGNORE


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize("transfer_syntax", [None, RLELossless, JPEG2000Lossless])
def test_multiframe_decodes_the_middle_frame(transfer_syntax: UID | None) -> None:
    frames = np.stack([np.full((32, 32), 10 * (i + 1), np.uint8) for i in range(5)])
    ds = make_dataset(frames)
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    decoded = decode_dataset(ds)
    assert np.all(decoded.pixels == 30)  # frame index 5 // 2 = 2
    assert decoded.metadata["frame_index"] == "2"
    assert decoded.metadata["number_of_frames"] == "5"


def test_dicom_without_preamble_and_meta_decodes() -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (12, 10), dtype=np.uint8)
    ds = make_dataset(pixels)
    del ds.file_meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    data = buffer.getvalue()
    assert data[128:132] != b"DICM"
    assert sniff_format(data) == "DICOM"
    decoded = decode_image(data)
    assert np.array_equal(decoded.pixels[:, :, 0], pixels)


def test_explicit_big_endian_without_meta_decodes() -> None:
    pixels = ramp(8, 8, 255, np.uint8)
    ds = make_dataset(pixels)
    del ds.file_meta
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=False)
    assert np.array_equal(decode_image(buffer.getvalue()).pixels[:, :, 0], pixels)


# --------------------------------------------------------------------------- header checks


def test_dicom_without_pixel_data_is_corrupt() -> None:
    ds = make_dataset(np.zeros((4, 4), np.uint8))
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.481.5")
    error = decode_error(to_bytes(ds))
    assert error.kind is DecodeErrorKind.CORRUPT
    assert str(error) == "DICOM has no pixel data (SOP class: RT Plan Storage)"


def test_declared_size_over_the_limit_is_too_large_and_not_allocated() -> None:
    ds = make_dataset(np.zeros((2, 2), np.uint16))
    ds.Rows = ds.Columns = 60000
    data = to_bytes(ds)
    error = decode_error(data)
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert "60000 x 60000 = 3600000000 pixels, over the limit of 100000000" in str(error)
    more_pixels = DecodeLimits(max_pixels=60000 * 60000)
    error = decode_error(data, more_pixels)
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert "60000 x 60000 pixels x 1 sample(s) x 16 bits = 6866 MiB, over the limit" in str(error)
    raised = DecodeLimits(max_pixels=60000 * 60000, max_decoded_bytes=2**40)
    error = decode_error(data, raised)
    assert error.kind is DecodeErrorKind.CORRUPT
    assert "7200000000 bytes, but holds only 8 bytes" in str(error)


def test_pixel_limit_applies_per_frame() -> None:
    frames = np.zeros((4, 10, 10), np.uint8)
    ds = make_dataset(frames)
    assert decode_dataset(ds, DecodeLimits(max_pixels=100)).pixels.shape == (10, 10, 1)
    error = decode_error(to_bytes(ds), DecodeLimits(max_pixels=99))
    assert error.kind is DecodeErrorKind.TOO_LARGE


# --------------------------------------------------------------------------- deflate


def _inflated_size(data: bytes) -> int:
    """The inflated size of a deflate_bomb's data set, counted without keeping it."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = split_part10(data)[1]
    size = 0
    while pending:
        size += len(inflater.decompress(pending, 2**22))
        pending = inflater.unconsumed_tail
    assert inflater.eof
    return size


def test_deflate_bomb_is_too_large_once_past_what_its_header_needs() -> None:
    bomb = deflate_bomb(300)  # a 2048 x 2048 8-bit header over 300 MiB of pixel data
    assert len(bomb) < 2**20
    assert _inflated_size(bomb) > 300 * 2**20  # what pydicom alone would have allocated
    limits = DecodeLimits(max_bytes=32 * 2**20, max_pixels=2048 * 2048)
    small = decode_image(deflate_bomb(5), limits)  # 4 MiB of pixels and 1 MiB more is fine
    assert small.pixels.shape == (2048, 2048, 1)
    needed = 2048 * 2048  # what the header says the one 8-bit frame needs
    tracemalloc.start()
    try:
        started = time.perf_counter()
        error = decode_error(bomb, limits)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert "more than its header says the image needs" in str(error)
    assert elapsed < 2.0
    assert peak < needed + 2 * SLACK_BYTES + 8 * 2**20  # far below 300 MiB


def test_deflated_header_is_refused_past_its_own_cap() -> None:
    ds = make_dataset(np.zeros((1, 1), np.uint8))
    del ds.PixelData
    header = split_part10(to_bytes(ds))[1]
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = split_part10(to_bytes(ds))[0]
    # a private OB element of 40 MiB of zeros before any pixel data
    private = struct.pack("<HH2sHI", 0x0009, 0x1010, b"OB", 0, 40 * 2**20)
    body = raw_deflate(header + private + bytes(40 * 2**20))
    error = decode_error(meta + body)
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert f"before the pixel data are over {HEADER_MAX_BYTES // 2**20} MiB" in str(error)


def test_shipped_deflated_file_decodes_like_pydicom() -> None:
    path = PYDICOM_TEST_FILES / "image_dfl.dcm"
    reference = pydicom.dcmread(path)
    assert reference.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    dataset = read_dataset(path.read_bytes(), DecodeLimits())
    assert dataset.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert dataset.PixelData == reference.PixelData
    assert np.array_equal(dataset.pixel_array, reference.pixel_array)
    decoded = decode_image(path.read_bytes())
    assert decoded.pixels.shape == (512, 512, 1)
    assert np.array_equal(decoded.pixels[:, :, 0], reference.pixel_array)  # 8-bit, no window
    assert decoded.metadata["transfer_syntax"] == "Deflated Explicit VR Little Endian"


def _deflated_grey16() -> tuple[bytes, bytes]:
    ds = make_dataset(GREY16, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return split_part10(to_bytes(ds))


def test_deflated_data_set_with_trailing_bytes_decodes_as_pydicom_reads_it() -> None:
    meta, body = _deflated_grey16()
    data = meta + body + b"trailing junk after the deflate stream"
    assert np.array_equal(read_dataset(data, DecodeLimits()).pixel_array, GREY16)
    assert decode_image(data).pixels.shape == (32, 32, 1)


def test_corrupt_deflate_stream_is_corrupt() -> None:
    meta, body = _deflated_grey16()
    error = decode_error(meta + b"\xff" + body[1:])  # final block of the reserved type 3
    assert error.kind is DecodeErrorKind.CORRUPT
    assert str(error).startswith("corrupt deflated DICOM data set: ")
    assert "invalid block type" in str(error)


def test_truncated_deflate_stream_is_corrupt() -> None:
    meta, body = _deflated_grey16()
    error = decode_error(meta + body[: len(body) // 2])
    assert error.kind is DecodeErrorKind.CORRUPT
    assert str(error).startswith("truncated deflated DICOM data set: the deflate stream ends")
