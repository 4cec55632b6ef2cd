"""DICOM to display pixels: photometric interpretations, bit depths, modality and VOI."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.processing import convert_color_space
from pydicom.pixels.utils import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000, UID, JPEG2000Lossless, JPEGBaseline8Bit

from support.decoding import grey_out, rgb_out
from support.dicom import encapsulated, make_dataset, pillow_jpeg, ramp, smooth_rgb

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
