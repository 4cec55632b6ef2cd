"""DICOM decoding: every transfer syntax, photometric interpretation and bit depth we promise.

Fixtures are generated here with pydicom (RLE natively, JPEG-LS via pyjpegls, JPEG 2000 via
pylibjpeg-openjpeg), Pillow (baseline JPEG, encapsulated by pydicom) and a small lossless
JPEG (process 14) encoder below; pydicom's own shipped test files are decoded too.
"""

from __future__ import annotations

import contextlib
import io
import struct
import time
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.processing import convert_color_space
from pydicom.pixels.utils import pack_bits
from pydicom.sequence import Sequence
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
    SecondaryCaptureImageStorage,
    generate_uid,
)

from model.decoding import (
    DecodedImage,
    DecodeErrorKind,
    DecodeLimits,
    ImageDecodeError,
    decode_image,
    sniff_format,
)
from model.dicom import inflated_size_limit, read_dataset

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
HEVC_MAIN_PROFILE = UID("1.2.840.10008.1.2.4.107")
MPEG2_MAIN_PROFILE = UID("1.2.840.10008.1.2.4.100")


# --------------------------------------------------------------------------- fixture builders


def make_dataset(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **attributes: object,
) -> Dataset:
    """A Secondary Capture dataset holding `pixels` natively (explicit VR little endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    bits_allocated = pixels.dtype.itemsize * 8
    if bits_allocated <= 16:
        ds.set_pixel_data(pixels, photometric, bits_stored or bits_allocated)
    else:  # pydicom's set_pixel_data stops at 16 bits
        ds.set_pixel_data(pixels.astype(np.uint16), photometric, 16)
        ds.BitsAllocated, ds.BitsStored = bits_allocated, bits_stored or bits_allocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(pixels.dtype.kind == "i")
        ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes (preamble, DICM, file meta) in the dataset's transfer syntax."""
    buffer = io.BytesIO()
    if ds.file_meta.TransferSyntaxUID.is_transfer_syntax:
        ds.save_as(buffer, enforce_file_format=True)
    else:  # a private transfer syntax: pydicom needs to be told the encoding
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def decode_dataset(ds: Dataset, limits: DecodeLimits | None = None) -> DecodedImage:
    return decode_image(to_bytes(ds), limits or DecodeLimits())


def grey_out(ds: Dataset) -> np.ndarray:
    decoded = decode_dataset(ds)
    assert decoded.source_format == "DICOM"
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.ndim == 3
    assert decoded.pixels.shape[2] == 1
    assert decoded.pixels.flags.c_contiguous
    return decoded.pixels[:, :, 0]


def rgb_out(ds: Dataset) -> np.ndarray:
    decoded = decode_dataset(ds)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.shape[2] == 3
    return decoded.pixels.astype(np.int32)


def smooth_rgb(rows: int = 32, columns: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    return np.stack([x * 255 // (columns - 1), y * 255 // (rows - 1), (x + y) * 2], -1).astype(
        np.uint8
    )


def ramp(rows: int, columns: int, top: int, dtype: type[np.integer]) -> np.ndarray:
    """Values 0..top increasing along each row and down the image."""
    values = np.linspace(0, top, rows * columns).round()
    return values.astype(dtype).reshape(rows, columns)


def encapsulated(
    ds: Dataset, frames: list[bytes], transfer_syntax: UID, photometric: str | None = None
) -> Dataset:
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    if photometric is not None:
        ds.PhotometricInterpretation = photometric
    return ds


def pillow_jpeg(pixels: np.ndarray, **save_options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, **save_options)
    return buffer.getvalue()


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


GREY16 = ramp(32, 32, 4000, np.uint16)
GREY16[5, 7] = 123  # break the monotone ramp so that frames are not trivially predictable


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
    decoded = decode_image((TEST_FILES / "JPGExtended.dcm").read_bytes())
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


# --------------------------------------------------------------------------- photometric


def test_rgb_native_is_exact() -> None:
    rgb = smooth_rgb()
    assert np.array_equal(rgb_out(make_dataset(rgb, "RGB")), rgb)


def test_rgb_planar_configuration_1_is_exact() -> None:
    rgb = smooth_rgb()
    ds = make_dataset(rgb, "RGB")
    ds.PlanarConfiguration = 1
    ds.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    assert np.array_equal(rgb_out(ds), rgb)


def test_rgb_16_bit_is_scaled_by_bits_stored() -> None:
    rgb = smooth_rgb()
    assert np.array_equal(rgb_out(make_dataset(rgb.astype(np.uint16) * 257, "RGB")), rgb)
    rgb12 = make_dataset(rgb.astype(np.uint16) * 16 + rgb // 16, "RGB", bits_stored=12)
    assert np.array_equal(rgb_out(rgb12), rgb)  # x * 4095 / 255 written as x*16 + x//16


def test_ybr_full_becomes_rgb() -> None:
    rgb = smooth_rgb()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds = make_dataset(ybr, "YBR_FULL")
    assert np.abs(rgb_out(ds) - rgb).max() <= 2


def test_ybr_full_422_native_becomes_rgb() -> None:
    rgb = np.repeat(smooth_rgb(32, 16), 2, axis=1)  # equal chroma within each pixel pair
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.uint8)
    pairs = ybr.reshape(32, 16, 2, 3)
    packed = np.stack(
        [pairs[:, :, 0, 0], pairs[:, :, 1, 0], pairs[:, :, 0, 1], pairs[:, :, 0, 2]], -1
    )
    ds = make_dataset(rgb, "RGB")
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = packed.astype(np.uint8).tobytes()
    assert np.abs(rgb_out(ds) - rgb).max() <= 2


def test_ybr_full_422_jpeg_baseline_becomes_rgb() -> None:
    rgb = smooth_rgb()
    jpeg = pillow_jpeg(rgb, subsampling=1)  # 4:2:2
    ds = encapsulated(make_dataset(rgb, "RGB"), [jpeg], JPEGBaseline8Bit, "YBR_FULL_422")
    error = np.abs(rgb_out(ds) - rgb)
    assert error.mean() < 2
    assert error.max() <= 12


@pytest.mark.parametrize(
    ("photometric", "transfer_syntax", "options", "tolerance"),
    [("YBR_RCT", JPEG2000Lossless, {}, 0), ("YBR_ICT", JPEG2000, {"j2k_cr": [5]}, 4)],
)
def test_jpeg_2000_colour_transforms_become_rgb(
    photometric: str, transfer_syntax: UID, options: dict[str, Any], tolerance: int
) -> None:
    rgb = smooth_rgb()
    ds = make_dataset(rgb, "RGB")
    ds.PhotometricInterpretation = photometric  # with RGB input this makes openjpeg use MCT
    ds.compress(transfer_syntax, **options)
    assert ds.PhotometricInterpretation == photometric
    assert np.abs(rgb_out(ds) - rgb).max() <= tolerance


@pytest.mark.parametrize(
    ("lut_bits", "stored_as"),
    [(16, "<u2"), (8, "u1"), (8, "<u2")],
    ids=["16-bit", "8-bit packed", "8-bit in 16-bit words"],
)
def test_palette_colour_becomes_rgb(lut_bits: int, stored_as: str) -> None:
    indices = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ds = make_dataset(indices, "PALETTE COLOR")
    scale = 257 if lut_bits == 16 else 1
    red = np.arange(256, dtype=np.uint16) * scale
    green = (255 - np.arange(256, dtype=np.uint16)) * scale
    blue = np.full(256, 128 * scale, dtype=np.uint16)
    for colour, lut in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, lut_bits])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut.astype(stored_as).tobytes())
    out = rgb_out(ds)
    assert np.array_equal(out[..., 0], indices)
    assert np.array_equal(out[..., 1], 255 - indices.astype(np.int32))
    assert np.all(out[..., 2] == 128)


def test_monochrome1_is_the_inverse_of_monochrome2() -> None:
    pixels = ramp(16, 16, 1000, np.uint16)
    mono2 = grey_out(make_dataset(pixels, "MONOCHROME2", 12))
    mono1 = grey_out(make_dataset(pixels, "MONOCHROME1", 12))
    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))
    assert mono2[0, 0] == 0  # the lowest value is black in MONOCHROME2 …
    assert mono1[0, 0] == 255  # … and white in MONOCHROME1


def test_monochrome1_inverts_after_the_window() -> None:
    pixels = np.array([[0, 100, 200]], dtype=np.uint16)
    ds = make_dataset(pixels, "MONOCHROME1", 8, WindowCenter=100.5, WindowWidth=201)
    # windowed: 0 → 0, 100 → 127.5 → 128, 200 → 255; then inverted
    assert grey_out(ds).tolist() == [[255, 127, 0]]


# --------------------------------------------------------------------------- bit depths


def test_plain_8_bit_unsigned_values_are_kept() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (20, 30), dtype=np.uint8)
    assert np.array_equal(grey_out(make_dataset(pixels)), pixels)


def test_1_bit_becomes_0_and_255() -> None:
    bits = (np.indices((16, 16)).sum(0) % 3 == 0).astype(np.uint8)
    ds = make_dataset(bits.astype(np.uint8))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = pack_bits(bits)
    assert np.array_equal(grey_out(ds), bits * 255)


@pytest.mark.parametrize(
    ("dtype", "bits_stored"),
    [
        (np.int8, 8),
        (np.uint16, 12),
        (np.int16, 12),
        (np.uint16, 16),
        (np.int16, 16),
        (np.uint32, 32),
        (np.int32, 32),
    ],
)
def test_wide_and_signed_grey_uses_the_percentile_window(
    dtype: type[np.integer], bits_stored: int
) -> None:
    info = np.iinfo(dtype)
    low = max(info.min, -(2 ** (bits_stored - 1)) if info.min < 0 else 0)
    high = min(info.max, 2 ** (bits_stored - 1) - 1 if info.min < 0 else 2**bits_stored - 1)
    pixels = np.linspace(low, high, 40 * 40).round().astype(dtype).reshape(40, 40)
    out = grey_out(make_dataset(pixels, bits_stored=bits_stored)).reshape(-1).astype(int)
    assert out[0] == 0
    assert out[-1] == 255
    assert np.all(np.diff(out) >= 0)
    assert len(np.unique(out)) > 200  # full contrast


def test_percentile_window_ignores_a_few_outliers() -> None:
    pixels = ramp(50, 50, 1000, np.uint16)
    pixels[0, :3] = 65535  # three hot pixels
    out = grey_out(make_dataset(pixels))
    assert out[25, 25] in range(120, 136)  # mid ramp stays mid grey
    assert out[-1, -1] == 255


def test_constant_image_without_window_is_black() -> None:
    assert np.all(grey_out(make_dataset(np.full((8, 8), 700, np.uint16))) == 0)


def test_float_pixel_data_is_windowed() -> None:
    values = np.linspace(-1.5, 2.5, 64, dtype=np.float32).reshape(8, 8)
    ds = make_dataset(np.zeros((8, 8), np.uint16))
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    out = grey_out(ds).reshape(-1).astype(int)
    assert out[0] == 0
    assert out[-1] == 255
    assert np.all(np.diff(out) >= 0)


# --------------------------------------------------------------------------- modality and VOI


def _reference_linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 written out, output range 0..255."""
    out = np.empty(values.shape)
    below = values <= center - 0.5 - (width - 1) / 2
    above = values > center - 0.5 + (width - 1) / 2
    between = ~below & ~above
    out[below], out[above] = 0, 255
    out[between] = ((values[between] - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.rint(out)


def test_rescale_then_window_gives_the_expected_values() -> None:
    stored = np.arange(0, 2048, 8, dtype=np.int16).reshape(16, 16)
    ds = make_dataset(stored, bits_stored=12)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024  # stored → "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    hounsfield = stored * 2.0 - 1024
    assert np.array_equal(grey_out(ds), _reference_linear_window(hounsfield, 40, 400))
    # Spot checks: far below the window is black, far above white, the centre mid grey.
    out = grey_out(ds)
    assert out[stored * 2 - 1024 < -200].max() == 0
    assert out[stored * 2 - 1024 > 300].min() == 255


def test_first_of_several_windows_is_used() -> None:
    stored = np.arange(256, dtype=np.uint16).reshape(16, 16) * 4
    ds = make_dataset(stored, bits_stored=10)
    ds.WindowCenter, ds.WindowWidth = [512, 100], [1024, 50]
    expected = _reference_linear_window(stored.astype(float), 512, 1024)
    assert np.array_equal(grey_out(ds), expected)


def test_linear_exact_and_sigmoid_windows() -> None:
    stored = np.array([[0, 450, 500, 550, 1000]], dtype=np.uint16)
    exact = make_dataset(stored, bits_stored=10, WindowCenter=500, WindowWidth=100)
    exact.VOILUTFunction = "LINEAR_EXACT"
    # (x - c) / w + 0.5: 450 → 0, 500 → 0.5, 550 → 1
    assert grey_out(exact).tolist() == [[0, 0, 128, 255, 255]]
    sigmoid = make_dataset(stored, bits_stored=10, WindowCenter=500, WindowWidth=100)
    sigmoid.VOILUTFunction = "SIGMOID"
    # 255 / (1 + exp(-4 (x - c) / w)): 450 → 30.4, 500 → 127.5, 550 → 224.6
    assert grey_out(sigmoid).tolist() == [[0, 30, 128, 225, 255]]


def test_voi_lut_sequence_wins_over_the_window() -> None:
    stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    ds = make_dataset(stored, bits_stored=12, WindowCenter=100, WindowWidth=10)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = [4095 - i for i in range(4096)]  # an inverting LUT
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = Sequence([item])
    expected = np.rint((4095 - stored.astype(float)) * 255 / 4095)
    assert np.array_equal(grey_out(ds), expected)


def test_voi_lut_sequence_with_8_bit_entries_and_more_than_256_entries() -> None:
    stored = np.arange(0, 1024, 4, dtype=np.uint16).reshape(16, 16)
    ds = make_dataset(stored, bits_stored=10)
    item = Dataset()
    item.LUTDescriptor = [1024, 0, 8]
    item.LUTData = [i // 4 for i in range(1024)]
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = Sequence([item])
    assert np.array_equal(grey_out(ds), stored // 4)


def test_modality_lut_sequence_is_applied_before_the_window() -> None:
    stored = np.arange(256, dtype=np.uint16).reshape(16, 16)
    ds = make_dataset(stored, bits_stored=8)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.ModalityLUTType = "HU"
    item.LUTData = [1000 + 10 * i for i in range(256)]
    item["LUTData"].VR = "US"
    ds.ModalityLUTSequence = Sequence([item])
    ds.WindowCenter, ds.WindowWidth = 2275.5, 2551  # covers 1000..3550 exactly
    expected = _reference_linear_window(1000 + 10 * stored.astype(float), 2275.5, 2551)
    assert np.array_equal(grey_out(ds), expected)


def test_enhanced_multiframe_functional_groups_override_rescale_and_window() -> None:
    frames = np.stack([np.full((8, 8), v, np.uint16) for v in (0, 100, 200)])
    ds = make_dataset(frames, bits_stored=12)
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    per_frame = []
    for index in range(3):
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1, -100 * index
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = 50.5 if index == 1 else 1000.5, 101
        group = Dataset()
        group.PixelValueTransformationSequence = Sequence([transform])
        group.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    # middle frame (index 1): stored 100 → rescaled 0 → window 50.5/101 → 0
    assert np.all(grey_out(ds) == 0)


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


# --------------------------------------------------------------------------- errors


def _decode_error(data: bytes, limits: DecodeLimits | None = None) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, limits or DecodeLimits())
    return caught.value


def test_dicom_without_pixel_data_is_corrupt() -> None:
    ds = make_dataset(np.zeros((4, 4), np.uint8))
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.481.5")
    error = _decode_error(to_bytes(ds))
    assert error.kind is DecodeErrorKind.CORRUPT
    assert str(error) == "DICOM has no pixel data (SOP class: RT Plan Storage)"


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
    error = _decode_error(data)
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
    error = _decode_error(to_bytes(ds))
    assert error.kind is DecodeErrorKind.CORRUPT
    assert f"{codec} stream" in str(error)
    assert "truncated" in str(error)


def test_truncated_jpeg_baseline_dicom_is_corrupt() -> None:
    pixels = ramp(32, 32, 255, np.uint8)
    jpeg = pillow_jpeg(pixels)
    ds = encapsulated(make_dataset(pixels), [jpeg[: len(jpeg) // 2]], JPEGBaseline8Bit)
    error = _decode_error(to_bytes(ds))
    assert error.kind is DecodeErrorKind.CORRUPT
    assert "truncated JPEG stream" in str(error)


def test_declared_size_over_the_limit_is_too_large_and_not_allocated() -> None:
    ds = make_dataset(np.zeros((2, 2), np.uint16))
    ds.Rows = ds.Columns = 60000
    data = to_bytes(ds)
    error = _decode_error(data)
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert "60000 x 60000 = 3600000000 pixels, over the limit of 100000000" in str(error)
    raised = DecodeLimits(max_pixels=60000 * 60000)
    error = _decode_error(data, raised)
    assert error.kind is DecodeErrorKind.CORRUPT
    assert "7200000000 bytes, but holds only 8 bytes" in str(error)


def test_pixel_limit_applies_per_frame() -> None:
    frames = np.zeros((4, 10, 10), np.uint8)
    ds = make_dataset(frames)
    assert decode_dataset(ds, DecodeLimits(max_pixels=100)).pixels.shape == (10, 10, 1)
    error = _decode_error(to_bytes(ds), DecodeLimits(max_pixels=99))
    assert error.kind is DecodeErrorKind.TOO_LARGE


def test_compressed_pixel_data_without_transfer_syntax_is_corrupt() -> None:
    ds = encapsulated(make_dataset(GREY16, bits_stored=12), [b"\xff\xd8\xff\xd9"], RLELossless)
    del ds.file_meta.TransferSyntaxUID
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    error = _decode_error(buffer.getvalue())
    assert error.kind is DecodeErrorKind.CORRUPT


# --------------------------------------------------------------------------- deflate


def _split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble, DICM and file meta; the data set after it) of Part 10 bytes."""
    (group_length,) = struct.unpack_from("<I", data, 140)  # (0002,0000) UL, first element
    meta_end = 144 + group_length
    return data[:meta_end], data[meta_end:]


def _raw_deflate(data: bytes, final: bool = True) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(
        zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH
    )


def deflate_bomb(inflated_mib: int) -> bytes:
    """A deflated DICOM: a 2048 x 2048 8-bit header, then `inflated_mib` MiB of zero pixels.

    Its header is within every limit; only the inflated size is not. The zeros are one
    deflated MiB repeated (each copy ends with a full flush, so it refers only to itself):
    a few hundred KiB that take no time to build.
    """
    ds = make_dataset(np.zeros((1, 1), np.uint8))
    del ds.PixelData
    ds.Rows = ds.Columns = 2048
    header = _split_part10(to_bytes(ds))[1]  # explicit VR little endian
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = _split_part10(to_bytes(ds))[0]
    pixel_bytes = inflated_mib * 2**20
    header += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixel_bytes)
    zero_mib = _raw_deflate(bytes(2**20), final=False)
    body = _raw_deflate(header, final=False) + zero_mib * inflated_mib + _raw_deflate(b"")
    return meta + body


def _inflated_size(data: bytes) -> int:
    """The inflated size of a deflate_bomb's data set, counted without keeping it."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = _split_part10(data)[1]
    size = 0
    while pending:
        size += len(inflater.decompress(pending, 2**22))
        pending = inflater.unconsumed_tail
    assert inflater.eof
    return size


def test_deflate_bomb_is_too_large_before_it_is_inflated() -> None:
    bomb = deflate_bomb(300)
    assert len(bomb) < 2**20
    assert _inflated_size(bomb) > 300 * 2**20  # what pydicom alone would have allocated
    limits = DecodeLimits(max_bytes=32 * 2**20, max_pixels=2048 * 2048)
    limit = inflated_size_limit(limits)
    assert limit == 48 * 2**20  # one frame at the pixel limit, 8 bytes a pixel, + 16 MiB
    small = decode_image(deflate_bomb(5), limits)  # the same file, inflating to 5 MiB, is fine
    assert small.pixels.shape == (2048, 2048, 1)
    tracemalloc.start()
    try:
        started = time.perf_counter()
        error = _decode_error(bomb, limits)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert str(error).startswith(f"deflated DICOM inflates past {limit} bytes (48.0 MiB)")
    assert elapsed < 2.0
    assert peak < limit + 16 * 2**20  # never much more than the limit, far below 300 MiB


def test_deflate_limit_with_default_limits_refuses_a_gigabyte() -> None:
    limit = inflated_size_limit(DecodeLimits())
    assert limit == 100_000_000 * 8 + 16 * 2**20  # 779 MiB
    assert DecodeLimits().max_bytes < limit < 2**30
    small_pixels = DecodeLimits(max_bytes=512 * 2**20, max_pixels=1000)
    assert inflated_size_limit(small_pixels) == 512 * 2**20  # never below max_bytes


def test_shipped_deflated_file_decodes_like_pydicom() -> None:
    path = TEST_FILES / "image_dfl.dcm"
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
    return _split_part10(to_bytes(ds))


def test_deflated_data_set_with_trailing_bytes_decodes_as_pydicom_reads_it() -> None:
    meta, body = _deflated_grey16()
    data = meta + body + b"trailing junk after the deflate stream"
    assert np.array_equal(read_dataset(data, DecodeLimits()).pixel_array, GREY16)
    assert decode_image(data).pixels.shape == (32, 32, 1)


def test_corrupt_deflate_stream_is_corrupt() -> None:
    meta, body = _deflated_grey16()
    error = _decode_error(meta + b"\xff" + body[1:])  # final block of the reserved type 3
    assert error.kind is DecodeErrorKind.CORRUPT
    assert str(error).startswith("corrupt deflated DICOM data set: ")
    assert "invalid block type" in str(error)


def test_truncated_deflate_stream_is_corrupt() -> None:
    meta, body = _deflated_grey16()
    error = _decode_error(meta + body[: len(body) // 2])
    assert error.kind is DecodeErrorKind.CORRUPT
    assert str(error).startswith("truncated deflated DICOM data set: the deflate stream ends")


# --------------------------------------------------------------------------- metadata


IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-556677",
    "PatientBirthDate": "19510203",
    "PatientAddress": "12 Elm Street, Springfield",
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "AccessionNumber": "ACC-99881",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.111222333",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.444555666",
    "OtherPatientIDs": "OTHER-4242",
    "StationName": "XRAY-ROOM-7",
}


def test_metadata_keeps_allowed_attributes_and_no_identifiers() -> None:
    ds = make_dataset(np.zeros((6, 5), np.uint8))
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageLaterality = "L"
    ds.StudyDate = "20240131"
    ds.Manufacturer = "Acme Imaging"
    ds.ManufacturerModelName = "Model 9"
    ds.PixelSpacing = [0.139, 0.14]
    metadata = decode_dataset(ds).metadata
    assert metadata == {
        "modality": "DX",
        "body_part": "CHEST",
        "view_position": "PA",
        "laterality": "L",
        "study_date": "20240131",
        "manufacturer": "Acme Imaging",
        "manufacturer_model": "Model 9",
        "photometric": "MONOCHROME2",
        "rows": "6",
        "columns": "5",
        "bits_stored": "8",
        "pixel_spacing": "0.139\\0.14",
        "number_of_frames": "1",
        "frame_index": "0",
        "sop_class": "Secondary Capture Image Storage",
        "transfer_syntax": "Explicit VR Little Endian",
    }
    everything = " ".join([*metadata.keys(), *metadata.values()]).lower()
    instance_uid = str(ds.SOPInstanceUID)
    for value in [*IDENTIFIERS.values(), instance_uid, "Doe", "Jane", "House"]:
        assert value.lower() not in everything


# --------------------------------------------------------------------------- pydicom's files


def _inspect_expectations() -> dict[str, object]:
    """What each of pydicom's shipped files must give (inspected one by one).

    A tuple (rows, columns, channels) means it decodes to that shape; a (kind, fragment)
    pair means it raises ImageDecodeError of that kind with that message fragment; None
    means it may either decode or raise ImageDecodeError (odd files).
    """
    no_pixels = (DecodeErrorKind.CORRUPT, "no pixel data")
    not_image = (DecodeErrorKind.NOT_AN_IMAGE, "not an image")
    return {
        "693_J2KI.dcm": (512, 512, 1),
        "CT_small.dcm": (128, 128, 1),
        "ExplVR_BigEnd.dcm": (60, 80, 3),
        "ExplVR_BigEndNoMeta.dcm": no_pixels,
        "ExplVR_LitEndNoMeta.dcm": no_pixels,
        "GDCMJ2K_TextGBR.dcm": (400, 400, 3),
        "J2K_pixelrep_mismatch.dcm": None,
        "JPEG-lossy.dcm": (DecodeErrorKind.CORRUPT, "JPEG stream"),  # invalid SOS parameters
        "JPEG2000-embedded-sequence-delimiter.dcm": (DecodeErrorKind.CORRUPT, "JPEG 2000"),
        "JPEG2000.dcm": (1024, 256, 1),
        "JPEGLSNearLossless_08.dcm": (45, 10, 1),
        "JPEGLSNearLossless_16.dcm": (50, 10, 1),
        "JPGExtended.dcm": (1024, 256, 1),
        "MR_small.dcm": (64, 64, 1),
        "MR_small_RLE.dcm": (64, 64, 1),
        "MR_small_bigendian.dcm": (64, 64, 1),
        "MR_small_expb.dcm": (64, 64, 1),
        "MR_small_implicit.dcm": (64, 64, 1),
        "MR_small_jp2klossless.dcm": (64, 64, 1),
        "MR_small_jpeg_ls_lossless.dcm": (64, 64, 1),
        "MR_small_padded.dcm": (64, 64, 1),
        "MR_truncated.dcm": (DecodeErrorKind.CORRUPT, "holds only 8130 bytes"),
        "README.txt": not_image,
        "SC_jpeg_no_color_transform.dcm": (256, 256, 3),
        "SC_jpeg_no_color_transform_2.dcm": (256, 256, 3),
        "SC_rgb_dcmtk_+eb+cr.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+n1.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+n2.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+np.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+s2.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+s4.dcm": (100, 100, 3),
        "SC_rgb_gdcm_KY.dcm": (100, 100, 3),
        "SC_rgb_jls_lossy_line.dcm": (100, 100, 3),
        "SC_rgb_jls_lossy_sample.dcm": (100, 100, 3),
        "SC_rgb_jpeg.dcm": (256, 256, 3),
        "SC_rgb_jpeg_app14_dcmd.dcm": (256, 256, 3),
        "SC_rgb_jpeg_dcmd.dcm": (256, 256, 3),
        "SC_rgb_jpeg_dcmtk.dcm": (100, 100, 3),
        "SC_rgb_jpeg_gdcm.dcm": (100, 100, 3),
        "SC_rgb_jpeg_lossy_gdcm.dcm": (100, 100, 3),
        "SC_rgb_rle.dcm": (100, 100, 3),
        "SC_rgb_rle_16bit.dcm": (100, 100, 3),
        "SC_rgb_rle_16bit_2frame.dcm": (100, 100, 3),
        "SC_rgb_rle_2frame.dcm": (100, 100, 3),
        "SC_rgb_rle_32bit.dcm": (100, 100, 3),
        "SC_rgb_rle_32bit_2frame.dcm": (100, 100, 3),
        "SC_rgb_small_odd.dcm": (3, 3, 3),
        "SC_rgb_small_odd_big_endian.dcm": (3, 3, 3),
        "SC_rgb_small_odd_jpeg.dcm": (3, 3, 3),
        "SC_ybr_full_422_uncompressed.dcm": (100, 100, 3),
        "UN_sequence.dcm": no_pixels,
        "badVR.dcm": None,  # Number of Frames '1A'
        "crayons.icc": not_image,
        "empty_charset_LEI.dcm": no_pixels,
        "examples_jpeg2k.dcm": (480, 640, 3),
        "examples_overlay.dcm": (300, 484, 1),
        "examples_palette.dcm": (350, 800, 3),
        "examples_rgb_color.dcm": (240, 320, 3),
        "examples_ybr_color.dcm": (240, 320, 3),
        "image_dfl.dcm": (512, 512, 1),
        "liver_1frame.dcm": (512, 512, 1),
        "liver_expb_1frame.dcm": (512, 512, 1),
        "meta_missing_tsyntax.dcm": None,
        "nested_priv_SQ.dcm": (DecodeErrorKind.CORRUPT, "no valid size"),
        "no_meta.dcm": not_image,  # its first byte is not a DICOM tag
        "no_meta_group_length.dcm": no_pixels,
        "priv_SQ.dcm": no_pixels,
        "reportsi.dcm": no_pixels,
        "reportsi_with_empty_number_tags.dcm": no_pixels,
        "rtdose.dcm": (10, 10, 1),
        "rtdose_1frame.dcm": (10, 10, 1),
        "rtdose_expb.dcm": (10, 10, 1),
        "rtdose_expb_1frame.dcm": (10, 10, 1),
        "rtdose_rle.dcm": (10, 10, 1),
        "rtdose_rle_1frame.dcm": (10, 10, 1),
        "rtplan.dcm": no_pixels,
        "rtplan.dump": not_image,
        "rtplan_truncated.dcm": no_pixels,
        "rtstruct.dcm": no_pixels,
        "rtstruct.dump": not_image,
        "test-SR.dcm": no_pixels,
        "test1.json": not_image,
        "test_PN.json": not_image,
        "waveform_ecg.dcm": no_pixels,
        "zipMR.gz": not_image,
    }


EXPECTATIONS = _inspect_expectations()
SHIPPED_FILES = sorted(p.name for p in TEST_FILES.iterdir() if p.is_file())


@pytest.mark.parametrize("name", SHIPPED_FILES)
def test_pydicom_shipped_file(name: str) -> None:
    data = (TEST_FILES / name).read_bytes()
    expected = EXPECTATIONS.get(name, None)
    if expected is None:
        if name not in EXPECTATIONS and name.endswith(".dcm"):
            pytest.fail(f"{name} is new in this pydicom: inspect it and add an expectation")
        try:
            decoded = decode_image(data)
        except ImageDecodeError:
            return
        assert decoded.pixels.dtype == np.uint8
        return
    if isinstance(expected, tuple) and isinstance(expected[0], DecodeErrorKind):
        kind, fragment = expected
        error = _decode_error(data)
        assert error.kind is kind
        assert str(fragment) in str(error)
        return
    decoded = decode_image(data)
    assert decoded.pixels.shape == expected
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.max() > decoded.pixels.min()  # something is visible
    assert decoded.metadata["rows"] == str(expected[0])


def test_shipped_multiframe_files_show_the_middle_frame() -> None:
    decoded = decode_image((TEST_FILES / "rtdose.dcm").read_bytes())
    assert decoded.metadata["number_of_frames"] == "15"
    assert decoded.metadata["frame_index"] == "7"
    decoded = decode_image((TEST_FILES / "examples_ybr_color.dcm").read_bytes())
    assert decoded.metadata["frame_index"] == "15"


def test_same_image_in_every_shipped_mr_encoding_decodes_identically() -> None:
    names = [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ]
    reference = decode_image((TEST_FILES / names[0]).read_bytes()).pixels
    for name in names[1:]:
        assert np.array_equal(decode_image((TEST_FILES / name).read_bytes()).pixels, reference)


def test_decoding_does_not_leave_warning_filters_changed() -> None:
    before = list(warnings.filters)
    for name in ("badVR.dcm", "CT_small.dcm", "rtplan.dcm"):
        with contextlib.suppress(ImageDecodeError):
            decode_image((TEST_FILES / name).read_bytes())
    assert list(warnings.filters) == before
