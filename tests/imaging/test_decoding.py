"""Raster decoding, content sniffing, limits, bad inputs and a small fuzz test.

DICOM specifics are in ``dicom/``. Fixtures are generated in memory with Pillow;
the real images come from ``../shared/data`` beside the checkout.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imaging.decode import (
    SUPPORTED_FORMATS,
    DecodedImage,
    DecodeErrorKind,
    DecodeLimits,
    ImageDecodeError,
    decode_file,
    decode_image,
    sniff_format,
)
from support.decoding import decode_error
from support.dicom import PYDICOM_TEST_FILES
from support.images import encode, rng_image

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def smooth_rgb(rows: int = 48, columns: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    return np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)


def decoded(data: bytes, expected_format: str) -> np.ndarray:
    image = decode_image(data)
    assert image.source_format == expected_format
    assert image.pixels.dtype == np.uint8
    assert image.pixels.ndim == 3
    assert image.pixels.flags.c_contiguous
    return image.pixels


# --------------------------------------------------------------------------- PNG


def test_png_grey_is_exact() -> None:
    grey = rng_image((30, 40))
    assert np.array_equal(decoded(encode(Image.fromarray(grey), "PNG"), "PNG"), grey[..., None])


def test_png_rgb_is_exact() -> None:
    rgb = rng_image((30, 40, 3))
    assert np.array_equal(decoded(encode(Image.fromarray(rgb), "PNG"), "PNG"), rgb)


def test_png_rgba_is_composited_over_black() -> None:
    rgba = rng_image((20, 25, 4), seed=3)
    out = decoded(encode(Image.fromarray(rgba, "RGBA"), "PNG"), "PNG").astype(np.int32)
    expected = (rgba[..., :3].astype(np.int32) * rgba[..., 3:] + 127) // 255
    assert out.shape == (20, 25, 3)
    assert np.array_equal(out, expected)


def test_png_grey_with_alpha_stays_grey() -> None:
    la = rng_image((10, 12, 2), seed=4)
    out = decoded(encode(Image.fromarray(la, "LA"), "PNG"), "PNG").astype(np.int32)
    expected = (la[..., :1].astype(np.int32) * la[..., 1:] + 127) // 255
    assert np.array_equal(out, expected)


def test_png_palette_becomes_rgb() -> None:
    palette = rng_image((256, 3), seed=5)
    indices = rng_image((16, 20), seed=6)
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette(palette.reshape(-1).tolist())
    out = decoded(encode(image, "PNG"), "PNG")
    assert np.array_equal(out, palette[indices])


def test_png_palette_transparency_is_black() -> None:
    palette = np.full((256, 3), 200, np.uint8)
    indices = np.array([[0, 1], [1, 0]], np.uint8)
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette(palette.reshape(-1).tolist())
    out = decoded(encode(image, "PNG", transparency=0), "PNG")
    assert out[:, :, 0].tolist() == [[0, 200], [200, 0]]


def test_png_rgb_with_transparent_colour_key() -> None:
    rgb = np.full((2, 2, 3), 90, np.uint8)
    rgb[0, 0] = (10, 20, 30)
    out = decoded(encode(Image.fromarray(rgb), "PNG", transparency=(10, 20, 30)), "PNG")
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[1, 1].tolist() == [90, 90, 90]


def test_png_1_bit_becomes_0_and_255() -> None:
    bits = np.indices((9, 9)).sum(0) % 2 == 0
    out = decoded(encode(Image.fromarray(bits), "PNG"), "PNG")
    assert np.array_equal(out[:, :, 0], bits.astype(np.uint8) * 255)


def test_png_16_bit_gradient_is_windowed_to_full_contrast() -> None:
    gradient = np.linspace(1000, 50000, 64 * 64).astype(np.uint16).reshape(64, 64)
    out = decoded(encode(Image.fromarray(gradient), "PNG"), "PNG")
    flat = out.reshape(-1).astype(int)
    assert out.shape == (64, 64, 1)
    assert flat[0] == 0
    assert flat[-1] == 255
    assert np.all(np.diff(flat) >= 0)


# --------------------------------------------------------------------------- JPEG


def test_jpeg_rgb_is_close() -> None:
    rgb = smooth_rgb()
    out = decoded(encode(Image.fromarray(rgb), "JPEG", quality=95), "JPEG").astype(int)
    assert out.shape == rgb.shape
    assert np.abs(out - rgb).mean() < 2


def test_jpeg_grey_is_close() -> None:
    grey = smooth_rgb()[..., 0]
    out = decoded(encode(Image.fromarray(grey), "JPEG", quality=95), "JPEG").astype(int)
    assert out.shape == (48, 64, 1)
    assert np.abs(out[..., 0] - grey).mean() < 2


def test_jpeg_cmyk_becomes_rgb() -> None:
    image = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # pure red
    out = decoded(encode(image, "JPEG", quality=95), "JPEG").astype(int)
    assert out.shape == (6, 8, 3)
    assert np.abs(out - [255, 0, 0]).max() < 12


def test_jpeg_exif_orientation_is_applied() -> None:
    stored = np.zeros((40, 80, 3), np.uint8)  # 80 wide, 40 high; a white top-left block
    stored[:20, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    data = encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes())
    out = decoded(data, "JPEG")
    expected = np.rot90(stored, k=-1)  # clockwise
    assert out.shape == (80, 40, 3)
    assert np.abs(out.astype(int) - expected).mean() < 4
    assert out[:20, -20:].mean() > 240  # the block is now top right


# --------------------------------------------------------------------------- TIFF, BMP, WebP


def test_tiff_8_bit_is_exact() -> None:
    grey = rng_image((21, 13))
    assert np.array_equal(decoded(encode(Image.fromarray(grey), "TIFF"), "TIFF")[..., 0], grey)


def test_tiff_rgb_lzw_is_exact() -> None:
    rgb = rng_image((21, 13, 3))
    data = encode(Image.fromarray(rgb), "TIFF", compression="tiff_lzw")
    assert np.array_equal(decoded(data, "TIFF"), rgb)


def test_tiff_16_bit_gradient_is_windowed_to_full_contrast() -> None:
    gradient = np.linspace(0, 4095, 100 * 80).astype(np.uint16).reshape(100, 80)
    out = decoded(encode(Image.fromarray(gradient), "TIFF"), "TIFF")
    flat = out.reshape(-1).astype(int)
    assert out.shape == (100, 80, 1)
    assert flat.min() == 0
    assert flat.max() == 255
    assert np.all(np.diff(flat) >= 0)
    assert len(np.unique(flat)) > 250


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_tiff_float_and_32_bit_integer_are_windowed(dtype: type[np.number]) -> None:
    values = np.linspace(-3e4, 7e4, 50 * 40).astype(dtype).reshape(50, 40)
    image = Image.fromarray(values)
    assert image.mode in ("F", "I")
    out = decoded(encode(image, "TIFF"), "TIFF").reshape(-1).astype(int)
    assert out[0] == 0
    assert out[-1] == 255
    assert np.all(np.diff(out) >= 0)


def test_tiff_float_nan_becomes_black() -> None:
    values = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    values[0, 0] = np.nan
    out = decoded(encode(Image.fromarray(values), "TIFF"), "TIFF")
    assert out[0, 0, 0] == 0
    assert out[-1, -1, 0] == 255


def test_multi_frame_tiff_gives_the_first_frame() -> None:
    frames = [Image.fromarray(np.full((8, 8), value, np.uint8)) for value in (11, 22, 33)]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    assert np.all(decoded(data, "TIFF") == 11)


def test_tiff_exif_orientation_is_applied() -> None:
    stored = np.zeros((10, 30), np.uint8)
    stored[:, :5] = 255  # white left edge
    data = encode(Image.fromarray(stored), "TIFF", tiffinfo={0x0112: 3})  # rotated 180°
    out = decoded(data, "TIFF")[..., 0]
    assert np.array_equal(out, np.rot90(stored, 2))


def test_bmp_rgb_is_exact() -> None:
    rgb = rng_image((17, 23, 3))
    assert np.array_equal(decoded(encode(Image.fromarray(rgb), "BMP"), "BMP"), rgb)


def test_bmp_grey_keeps_its_values() -> None:
    grey = rng_image((17, 23))
    out = decoded(encode(Image.fromarray(grey), "BMP"), "BMP")
    assert all(np.array_equal(out[..., c], grey) for c in range(out.shape[2]))


def test_webp_lossless_is_exact() -> None:
    rgb = rng_image((20, 30, 3))
    data = encode(Image.fromarray(rgb), "WEBP", lossless=True)
    assert np.array_equal(decoded(data, "WEBP"), rgb)


def test_webp_with_alpha_is_composited() -> None:
    rgba = rng_image((20, 30, 4), seed=8)
    data = encode(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True, exact=True)
    out = decoded(data, "WEBP").astype(np.int32)
    expected = (rgba[..., :3].astype(np.int32) * rgba[..., 3:] + 127) // 255
    assert np.array_equal(out, expected)


def test_animated_webp_gives_the_first_frame() -> None:
    frames = [Image.fromarray(np.full((8, 8, 3), value, np.uint8)) for value in (40, 160)]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert np.all(decoded(data, "WEBP") == 40)


# --------------------------------------------------------------------------- sniffing


def test_sniff_format_recognises_every_supported_format() -> None:
    image = Image.fromarray(rng_image((8, 8, 3)))
    for image_format in ("PNG", "JPEG", "TIFF", "BMP", "WEBP"):
        assert sniff_format(encode(image, image_format)) == image_format
    assert sniff_format((PYDICOM_TEST_FILES / "CT_small.dcm").read_bytes()) == "DICOM"
    assert sniff_format(b"") is None
    assert sniff_format(b"BMW is a car maker, not a bitmap") is None
    assert set(SUPPORTED_FORMATS) == {"PNG", "JPEG", "TIFF", "BMP", "WEBP", "DICOM"}


def test_dicom_preamble_wins_over_a_tiff_header_in_it() -> None:
    data = (PYDICOM_TEST_FILES / "MR_truncated.dcm").read_bytes()
    assert data[:4] == b"II*\x00"  # a dual-personality preamble
    assert sniff_format(data) == "DICOM"


def test_content_not_file_name_decides(tmp_path: Path) -> None:
    grey = rng_image((12, 9))
    png = encode(Image.fromarray(grey), "PNG")
    for name in ("scan.jpg", "scan.dcm", "scan", "scan.txt"):
        (tmp_path / name).write_bytes(png)
        image = decode_file(tmp_path / name)
        assert image.source_format == "PNG"
        assert np.array_equal(image.pixels[..., 0], grey)
    jpeg = encode(Image.fromarray(smooth_rgb()), "JPEG")
    (tmp_path / "photo.png").write_bytes(jpeg)
    assert decode_file(str(tmp_path / "photo.png")).source_format == "JPEG"


def test_decode_image_accepts_bytearray_and_memoryview() -> None:
    png = encode(Image.fromarray(rng_image((5, 5))), "PNG")
    reference = decode_image(png).pixels
    assert np.array_equal(decode_image(bytearray(png)).pixels, reference)  # type: ignore[arg-type]
    assert np.array_equal(decode_image(memoryview(png)).pixels, reference)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real images


def _real_images(dataset: str, pattern: str, count: int) -> list[Path]:
    folder = SHARED_DATA / dataset / "images"
    if not folder.is_dir():
        pytest.skip(f"real images not found at {folder}")
    paths = sorted(folder.glob(pattern))[:count]
    if not paths:
        pytest.skip(f"no {pattern} files in {folder}")
    return paths


def test_real_ham10000_jpegs_decode_to_224_rgb() -> None:
    for path in _real_images("ham10000", "*.jpg", 5):
        image = decode_file(path)
        assert image.source_format == "JPEG"
        assert image.pixels.shape == (224, 224, 3)
        assert image.pixels.std() > 5  # a real picture, not a flat fill


def test_real_chestxray14_pngs_decode_to_256_grey() -> None:
    for path in _real_images("chestxray14", "*.png", 5):
        image = decode_file(path)
        assert image.source_format == "PNG"
        assert image.pixels.shape == (256, 256, 1)
        with Image.open(path) as reference:
            assert np.array_equal(image.pixels[..., 0], np.asarray(reference))


# --------------------------------------------------------------------------- bad inputs


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header declaring `width` × `height` grey pixels, with one tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _small_png() -> bytes:
    return encode(Image.fromarray(rng_image((32, 32, 3))), "PNG")


def _small_jpeg() -> bytes:
    return encode(Image.fromarray(smooth_rgb()), "JPEG", quality=90)


def _png_with_bad_crc() -> bytes:
    data = bytearray(_small_png())
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # change the compressed data, keep the stored CRC
    return bytes(data)


def _png_with_garbage_idat() -> bytes:
    garbage = bytes(np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", garbage)
        + _png_chunk(b"IEND", b"")
    )


BAD_INPUTS = {
    "empty": (b"", DecodeErrorKind.NOT_AN_IMAGE, "content is empty"),
    "random bytes": (
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        DecodeErrorKind.NOT_AN_IMAGE,
        "matches no supported format (PNG, JPEG, TIFF, BMP, WebP, DICOM)",
    ),
    "text": (b"patient list\nnothing to see\n" * 20, DecodeErrorKind.NOT_AN_IMAGE, "not an image"),
    "html": (
        b"<!DOCTYPE html><html><body><img src='x.png'></body></html>",
        DecodeErrorKind.NOT_AN_IMAGE,
        "not an image",
    ),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", DecodeErrorKind.UNSUPPORTED, "PDF"),
    "jpeg 2000 file": (
        b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 40,
        DecodeErrorKind.UNSUPPORTED,
        "JPEG 2000",
    ),
    "avif": (
        b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 32,
        DecodeErrorKind.UNSUPPORTED,
        "AVIF",
    ),
    "heic": (
        b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 32,
        DecodeErrorKind.UNSUPPORTED,
        "HEIC",
    ),
    "truncated png": (_small_png()[:300], DecodeErrorKind.CORRUPT, "truncated or corrupt PNG"),
    "truncated jpeg": (
        _small_jpeg()[: len(_small_jpeg()) // 2],
        DecodeErrorKind.CORRUPT,
        "truncated or corrupt JPEG",
    ),
    "png with bad crc": (_png_with_bad_crc(), DecodeErrorKind.CORRUPT, "PNG"),
    "png with garbage idat": (_png_with_garbage_idat(), DecodeErrorKind.CORRUPT, "PNG"),
    "png header only": (_small_png()[:33], DecodeErrorKind.CORRUPT, "PNG"),
    "dicom magic only": (b"\x00" * 128 + b"DICM", DecodeErrorKind.CORRUPT, "no pixel data"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input(name: str) -> None:
    data, kind, fragment = BAD_INPUTS[name]
    error = decode_error(data)
    assert error.kind is kind
    assert fragment in str(error)
    assert "\n" not in str(error)


def test_gif_is_unsupported() -> None:
    gif = encode(Image.fromarray(rng_image((8, 8))), "GIF")
    error = decode_error(gif)
    assert error.kind is DecodeErrorKind.UNSUPPORTED
    assert str(error).startswith("unsupported image format GIF")


def test_ico_is_unsupported() -> None:
    ico = encode(Image.fromarray(rng_image((16, 16, 3))), "ICO")
    assert decode_error(ico).kind is DecodeErrorKind.UNSUPPORTED


def test_png_declaring_a_huge_size_is_too_large_without_allocating() -> None:
    error = decode_error(png_declaring(12000, 12000))  # 144 M pixels, under Pillow's bomb limit
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert str(error) == "image is 12000 x 12000 = 144000000 pixels, over the limit of 100000000"
    error = decode_error(png_declaring(50000, 50000))  # over Pillow's own bomb limit too
    assert error.kind is DecodeErrorKind.TOO_LARGE


def test_png_declaring_a_size_its_data_cannot_fill_is_corrupt() -> None:
    error = decode_error(png_declaring(3000, 3000))
    assert error.kind is DecodeErrorKind.CORRUPT


def test_custom_pixel_limit() -> None:
    png = encode(Image.fromarray(rng_image((10, 20))), "PNG")
    assert decode_image(png, DecodeLimits(max_pixels=200)).pixels.shape == (10, 20, 1)
    error = decode_error(png, DecodeLimits(max_pixels=199))
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert str(error) == "image is 20 x 10 = 200 pixels, over the limit of 199"


def test_data_over_max_bytes_is_too_large() -> None:
    png = encode(Image.fromarray(rng_image((10, 20))), "PNG")
    error = decode_error(png, DecodeLimits(max_bytes=len(png) - 1))
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert f"input is {len(png)} bytes" in str(error)


def test_decode_file_refuses_an_oversized_file_before_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = tmp_path / "huge.png"
    with huge.open("wb") as handle:
        handle.write(png_declaring(4, 4))
        handle.truncate(2**31)  # a sparse 2 GiB file

    def refuse_to_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("decode_file opened a file that is over the limit")

    monkeypatch.setattr(Path, "open", refuse_to_open)
    with pytest.raises(ImageDecodeError) as caught:
        decode_file(huge)
    assert caught.value.kind is DecodeErrorKind.TOO_LARGE
    assert "over the limit of 536870912 bytes" in str(caught.value)


def test_decode_file_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        decode_file(tmp_path / "absent.png")


def test_decode_error_is_a_value_error_and_pickles() -> None:
    error = ImageDecodeError("image is 1 x 1", DecodeErrorKind.TOO_LARGE)
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.kind is DecodeErrorKind.TOO_LARGE
    assert str(copy) == "image is 1 x 1"
    assert str(DecodeErrorKind.CORRUPT) == "corrupt"  # a StrEnum: usable as a JSON value


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DecodeLimits(max_pixels=0)


# --------------------------------------------------------------------------- fuzz


def _mutations(data: bytes, count: int, seed: int) -> list[bytes]:
    """Seeded bit flips, byte overwrites and truncations of `data`."""
    rng = np.random.default_rng(seed)
    mutated: list[bytes] = []
    for _ in range(count):
        buffer = bytearray(data)
        action = rng.integers(0, 3)
        if action == 0:
            for _ in range(rng.integers(1, 8)):
                position = rng.integers(0, len(buffer))
                buffer[position] ^= 1 << int(rng.integers(0, 8))
        elif action == 1:
            start = rng.integers(0, len(buffer))
            length = rng.integers(1, 16)
            buffer[start : start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        else:
            buffer = buffer[: rng.integers(0, len(buffer))]
        mutated.append(bytes(buffer))
    return mutated


FUZZ_SEEDS = {
    "PNG": lambda: _small_png(),
    "JPEG": lambda: _small_jpeg(),
    "DICOM native": lambda: (PYDICOM_TEST_FILES / "MR_small.dcm").read_bytes(),
    "DICOM RLE": lambda: (PYDICOM_TEST_FILES / "MR_small_RLE.dcm").read_bytes(),
    "DICOM JPEG-LS": lambda: (PYDICOM_TEST_FILES / "MR_small_jpeg_ls_lossless.dcm").read_bytes(),
    "DICOM JPEG 2000": lambda: (PYDICOM_TEST_FILES / "MR_small_jp2klossless.dcm").read_bytes(),
    "DICOM JPEG": lambda: (PYDICOM_TEST_FILES / "SC_rgb_small_odd_jpeg.dcm").read_bytes(),
}


@pytest.mark.parametrize("name", list(FUZZ_SEEDS))
def test_mutated_inputs_decode_or_raise_image_decode_error(name: str) -> None:
    outcomes = {"decoded": 0, "refused": 0}
    for data in _mutations(FUZZ_SEEDS[name](), count=60, seed=len(name)):
        try:
            image = decode_image(data)
        except ImageDecodeError as error:
            refusal = error
            outcomes["refused"] += 1
            assert isinstance(refusal.kind, DecodeErrorKind)
            assert str(refusal)
            continue
        assert isinstance(image, DecodedImage)
        assert image.pixels.dtype == np.uint8
        assert image.pixels.ndim == 3
        assert image.pixels.shape[2] in (1, 3)
        outcomes["decoded"] += 1
    assert outcomes["refused"] > 0  # the mutations do reach the error paths
