"""Bytes → pixels: the one entry point that turns an uploaded file into a uint8 array.

Decisions, in the order a file meets them:

* **Format by content.** :func:`sniff_format` looks at magic bytes only, never at a file
  name. ``DICM`` at offset 128 wins over everything else (a DICOM preamble may itself hold
  a TIFF header); then PNG, JPEG, TIFF (classic and BigTIFF), BMP (``BM`` plus a known
  info-header size), WebP (``RIFF....WEBP``); last a preamble-less DICOM whose first
  element is in group 0x0002 or 0x0008 with a plausible VR or length.
  :func:`sniff_format` returns only the formats we decode (:data:`SUPPORTED_FORMATS`);
  formats we recognise but do not decode (GIF, ICO, PDF, JPEG 2000 files, JPEG XL, AVIF,
  HEIF, PSD, NIfTI, OpenEXR) raise ``UNSUPPORTED`` naming the format.
* **Errors.** Only :class:`ImageDecodeError` leaves :func:`decode_image`, whatever the
  bytes: ``NOT_AN_IMAGE`` (no known format), ``UNSUPPORTED`` (known but not decoded,
  e.g. GIF or a DICOM transfer syntax without a decoder), ``CORRUPT`` (claims to be a
  supported format but does not decode: truncated, bad checksum, a DICOM without pixel
  data, a declared size that the data cannot hold), ``TOO_LARGE`` (over
  :class:`DecodeLimits`, over Pillow's decompression-bomb limit, or out of memory).
  Library warnings are silenced for the duration of a decode only
  (``warnings.catch_warnings``), never globally; before Python 3.14 that context manager
  swaps process-wide state, so decodes running in several *threads* at once can leave the
  "ignore" filter installed — decode in worker processes where that matters. A Rust
  extension's panic (pyo3 ``PanicException``, a BaseException) counts as ``CORRUPT``.
* **Limits.** ``max_bytes`` is checked before anything is parsed (and by
  :func:`decode_file` before the file is read); ``max_pixels`` (width × height of one
  frame) is checked from the header, before any pixel data is decoded.
* **Raster pixels.** The first frame of multi-frame TIFF/WebP. EXIF orientation is applied
  for every format that carries EXIF (JPEG, TIFF, WebP, and PNG ``eXIf``); a broken EXIF
  block is ignored, not fatal. Alpha (including palette and ``tRNS`` transparency) is
  composited over black and dropped. 8-bit grey and RGB stay as they are; palette, CMYK
  and YCbCr become RGB; 1-bit becomes 0/255. Grey with more than 8 bits (16-bit, 32-bit
  integer ``I``, float ``F``) is windowed by :func:`robust_window_to_uint8`.
* **Robust window.** The 0.5th and 99.5th percentiles of the finite values map to 0 and
  255 (linearly, clipped). If they coincide the minimum and maximum are used instead (so
  a sparse mask stays visible); a constant image becomes all zeros (black): there is no
  contrast to show and black is the letterbox colour of :mod:`model.preprocessing`.
  NaN becomes 0. Percentiles of very large images are taken on a regular subsample.

The result is always a C-contiguous ``uint8`` array of shape (H, W, 1) or (H, W, 3).
DICOM specifics (frame choice, modality/VOI pipeline, metadata allowlist) live in
:mod:`model.dicom`, which is imported only when a DICOM arrives.
"""

from __future__ import annotations

import enum
import io
import logging
import os
import re
import struct
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "DICOM")
_READABLE_FORMAT_LIST = "PNG, JPEG, TIFF, BMP, WebP, DICOM"

# Percentiles of the robust window, and the sample size above which they are estimated
# from a regular subsample (exact percentiles of 10^8 pixels take seconds).
ROBUST_WINDOW_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLE_SIZE = 1 << 22


class DecodeErrorKind(enum.StrEnum):
    """Why a decode failed; ``app/`` maps each kind to an HTTP status."""

    NOT_AN_IMAGE = "not_an_image"  # matches no image/DICOM format we know (415)
    UNSUPPORTED = "unsupported"  # a format or DICOM variant we know but do not decode (415)
    CORRUPT = "corrupt"  # claims to be a supported format but cannot be decoded (422)
    TOO_LARGE = "too_large"  # over max_bytes or max_pixels, or out of memory (413)


class ImageDecodeError(ValueError):
    """The input cannot become pixels; ``str(err)`` is a one-line reason for a person."""

    kind: DecodeErrorKind

    def __init__(self, message: str, kind: DecodeErrorKind) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[str, DecodeErrorKind]]:
        # Keeps the error picklable (worker processes send it back to the parent).
        return (type(self), (str(self), self.kind))


@dataclass(frozen=True)
class DecodeLimits:
    """Refuse inputs over these sizes before spending memory on them."""

    max_bytes: int = 512 * 2**20
    max_pixels: int = 100_000_000  # per decoded frame (width * height)

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"limits must be positive, got {self}")


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels: uint8, (H, W, 1) grey or (H, W, 3) RGB, C-contiguous."""

    pixels: np.ndarray
    source_format: str  # one of SUPPORTED_FORMATS
    metadata: Mapping[str, str] = field(default_factory=dict)


DEFAULT_LIMITS = DecodeLimits()

# A format decoder: (data, source format, limits) → image.
_Decoder = Callable[[bytes, str, DecodeLimits], DecodedImage]


# --------------------------------------------------------------------------- sniffing

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_BMP_INFO_HEADER_SIZES = frozenset({12, 16, 40, 52, 56, 64, 108, 124})
_DICOM_MAGIC_OFFSET = 128
_DICOM_FIRST_GROUPS = (0x0002, 0x0008)
_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI "
    b"UL UN UR US UT UV".split()
)

_ISOBMFF_BRANDS = {
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"hevx": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
}


def sniff_format(data: bytes) -> str | None:
    """Name the supported format of `data` from its magic bytes, or ``None``.

    Returns one of :data:`SUPPORTED_FORMATS`. Formats that are recognised but not
    supported (GIF, PDF, …) give ``None`` here; :func:`decode_image` names them.
    """
    if data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return "DICOM"
    if data.startswith(_PNG_MAGIC):
        return "PNG"
    if data.startswith(_JPEG_MAGIC):
        return "JPEG"
    if data[:4] in _TIFF_MAGICS:
        return "TIFF"
    if _looks_like_bmp(data):
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if _looks_like_bare_dicom(data):
        return "DICOM"
    return None


def _looks_like_bmp(data: bytes) -> bool:
    """``BM`` alone is too weak (text may start with it): also require a known header size."""
    if len(data) < 18 or data[:2] != b"BM":
        return False
    info_header_size: int = struct.unpack_from("<I", data, 14)[0]
    return info_header_size in _BMP_INFO_HEADER_SIZES


def _looks_like_bare_dicom(data: bytes) -> bool:
    """A DICOM stream without preamble: its first tag is in group 0x0002 or 0x0008."""
    if len(data) < 12:
        return False
    for endian in "<>":
        group, element = struct.unpack_from(f"{endian}HH", data, 0)
        if group not in _DICOM_FIRST_GROUPS or element > 0x1FFF:
            continue
        if data[4:6] in _DICOM_VRS:  # explicit VR, little or big endian
            return True
        (implicit_length,) = struct.unpack_from("<I", data, 4)
        if endian == "<" and implicit_length <= len(data) - 8:  # implicit VR is LE only
            return True
    return False


def _recognised_unsupported_format(data: bytes) -> str | None:
    """Name a format we recognise but do not decode, or ``None``."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"%PDF-"):
        return "PDF"
    if data.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG 2000"
    if data.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    if data.startswith(b"8BPS"):
        return "Photoshop PSD"
    if data.startswith(b"\x76\x2f\x31\x01"):
        return "OpenEXR"
    if data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "NIfTI"
    if _looks_like_ico(data):
        return "ICO"
    return _isobmff_image_format(data)


def _looks_like_ico(data: bytes) -> bool:
    if len(data) < 22 or data[:4] not in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00"):
        return False
    count: int = struct.unpack_from("<H", data, 4)[0]
    return 0 < count <= 256 and len(data) >= 6 + 16 * count


def _isobmff_image_format(data: bytes) -> str | None:
    """AVIF/HEIF: an ISO base media file whose ``ftyp`` box names an image brand."""
    if data[4:8] != b"ftyp" or len(data) < 16:
        return None
    box_size: int = struct.unpack_from(">I", data, 0)[0]
    brands = [data[8:12]] + [
        data[i : i + 4] for i in range(16, min(box_size, len(data), 256) - 3, 4)
    ]
    if b"avif" in brands or b"avis" in brands:
        return "AVIF"
    for brand in brands:
        if brand in _ISOBMFF_BRANDS:
            return _ISOBMFF_BRANDS[brand]
    return None


# --------------------------------------------------------------------------- entry points


def decode_image(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Decode `data` (PNG, JPEG, TIFF, BMP, WebP or DICOM, recognised by content).

    Raises :class:`ImageDecodeError` (and nothing else) for any input bytes.
    """
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    check_byte_count(len(data), limits)
    if not data:
        raise ImageDecodeError("not an image: the content is empty", DecodeErrorKind.NOT_AN_IMAGE)
    source_format = sniff_format(data)
    if source_format is None:
        raise _unrecognised_content_error(data)
    decoder: _Decoder = _decode_dicom if source_format == "DICOM" else _decode_raster
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = decoder(data, source_format, limits)
        except ImageDecodeError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(
                f"image is over Pillow's decompression-bomb limit: {_one_line(exc)}",
                DecodeErrorKind.TOO_LARGE,
            ) from exc
        except MemoryError as exc:
            raise ImageDecodeError(
                f"{source_format} needs more memory to decode than is available",
                DecodeErrorKind.TOO_LARGE,
            ) from exc
        except Exception as exc:  # every library failure is a decode failure
            raise _corrupt_content_error(source_format, exc) from exc
        except BaseException as exc:
            if not is_library_panic(exc):
                raise  # KeyboardInterrupt, SystemExit, …
            raise _corrupt_content_error(source_format, exc) from exc
    logger.debug("decoded %s to %s", source_format, image.pixels.shape)
    return image


def decode_file(
    path: str | os.PathLike[str],
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> DecodedImage:
    """Decode the file at `path` by its content (its name is ignored).

    The size is checked before reading, and at most ``max_bytes + 1`` bytes are read.
    A missing file raises :class:`FileNotFoundError`: that is not a decode problem.
    """
    file_path = Path(path)
    check_byte_count(file_path.stat().st_size, limits)
    with file_path.open("rb") as handle:
        data = handle.read(limits.max_bytes + 1)
    return decode_image(data, limits)


def _unrecognised_content_error(data: bytes) -> ImageDecodeError:
    unsupported = _recognised_unsupported_format(data)
    if unsupported is not None:
        return ImageDecodeError(
            f"unsupported image format {unsupported}: supported formats are "
            f"{_READABLE_FORMAT_LIST}",
            DecodeErrorKind.UNSUPPORTED,
        )
    return ImageDecodeError(
        f"not an image: the content matches no supported format ({_READABLE_FORMAT_LIST})",
        DecodeErrorKind.NOT_AN_IMAGE,
    )


def _corrupt_content_error(source_format: str, exc: BaseException) -> ImageDecodeError:
    return ImageDecodeError(
        f"truncated or corrupt {source_format}: {_one_line(exc)}", DecodeErrorKind.CORRUPT
    )


def is_library_panic(exc: BaseException) -> bool:
    """A Rust extension's panic (pyo3 ``PanicException``: a BaseException, not an Exception).

    pylibjpeg-rle, for one, panics on some malformed RLE segments.
    """
    return type(exc).__name__ == "PanicException"


def _decode_dicom(data: bytes, source_format: str, limits: DecodeLimits) -> DecodedImage:
    from model.dicom import decode_dicom  # pydicom is imported only when DICOM arrives

    return decode_dicom(data, limits)


# --------------------------------------------------------------------------- limits


def check_byte_count(byte_count: int, limits: DecodeLimits) -> None:
    """Raise ``TOO_LARGE`` when `byte_count` is over ``limits.max_bytes``."""
    if byte_count > limits.max_bytes:
        raise ImageDecodeError(
            f"input is {byte_count} bytes ({byte_count / 2**20:.1f} MiB), over the limit of "
            f"{limits.max_bytes} bytes ({limits.max_bytes / 2**20:.1f} MiB)",
            DecodeErrorKind.TOO_LARGE,
        )


def check_pixel_count(width: int, height: int, limits: DecodeLimits) -> None:
    """Raise ``TOO_LARGE`` when one frame of `width` × `height` is over ``max_pixels``."""
    pixel_count = width * height
    if pixel_count > limits.max_pixels:
        raise ImageDecodeError(
            f"image is {width} x {height} = {pixel_count} pixels, over the limit of "
            f"{limits.max_pixels}",
            DecodeErrorKind.TOO_LARGE,
        )


# --------------------------------------------------------------------------- raster

_HIGH_DEPTH_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = {"LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}


def _decode_raster(data: bytes, source_format: str, limits: DecodeLimits) -> DecodedImage:
    """Decode the first frame of a PNG, JPEG, TIFF, BMP or WebP with Pillow."""
    with Image.open(io.BytesIO(data), formats=[source_format]) as opened:
        width, height = opened.size
        if width < 1 or height < 1:
            raise ImageDecodeError(
                f"corrupt {source_format}: the header declares {width} x {height} pixels",
                DecodeErrorKind.CORRUPT,
            )
        check_pixel_count(width, height, limits)
        opened.load()
        image = _apply_exif_orientation(opened)
        pixels = raster_to_uint8(image)
    return DecodedImage(pixels=pixels, source_format=source_format, metadata={})


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF Orientation tag says; a broken EXIF block is ignored."""
    try:
        transposed = ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block must not reject the pixels
        logger.debug("ignoring unreadable EXIF orientation: %s", exc)
        return image
    return image if transposed is None else transposed


def raster_to_uint8(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image → uint8 (H, W, 1) or (H, W, 3), alpha composited over black."""
    mode = image.mode
    if mode in _HIGH_DEPTH_GREY_MODES:
        return as_hwc(robust_window_to_uint8(np.asarray(image)))
    if mode == "1":
        return as_hwc(np.asarray(image.convert("L")))
    if "transparency" in image.info and mode in ("L", "P", "RGB"):
        image = image.convert("LA" if mode == "L" else "RGBA")
        mode = image.mode
    if mode in _ALPHA_MODES:
        with_alpha = np.asarray(image.convert(_ALPHA_MODES[mode]))
        return as_hwc(composite_over_black(with_alpha))
    if mode not in ("L", "RGB"):
        image = image.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX
    return as_hwc(np.asarray(image))


def composite_over_black(with_alpha: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C+1) with alpha last → uint8 (H, W, C): colour × alpha / 255, rounded."""
    colour = with_alpha[..., :-1].astype(np.uint16)
    alpha = with_alpha[..., -1:].astype(np.uint16)
    return ((colour * alpha + 127) // 255).astype(np.uint8)


# --------------------------------------------------------------------------- pixel helpers


def as_hwc(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) → C-contiguous uint8 (H, W, C)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ImageDecodeError(
            f"decoded pixels have an unexpected shape {pixels.shape}", DecodeErrorKind.CORRUPT
        )
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def linear_window_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map `low` → 0 and `high` → 255 linearly, clip, round; NaN → 0. Needs high > low."""
    work = np.asarray(values, dtype=_float_dtype_for(values))
    scaled = (work - low) * (255.0 / (high - low))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    return np.rint(scaled).astype(np.uint8)


def robust_window_to_uint8(values: np.ndarray) -> np.ndarray:
    """The 0.5/99.5 percentile window (min/max if those coincide; constant → zeros)."""
    low, high = robust_window_bounds(values)
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    return linear_window_to_uint8(values, low, high)


def robust_window_bounds(values: np.ndarray) -> tuple[float, float]:
    """Robust (low, high) of the finite values of `values`; (0, 0) when there are none."""
    sample = _percentile_sample(values)
    if sample.size == 0:
        return 0.0, 0.0
    low, high = (float(v) for v in np.percentile(sample, ROBUST_WINDOW_PERCENTILES))
    if high > low:
        return low, high
    return float(sample.min()), float(sample.max())


def _percentile_sample(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLE_SIZE:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLE_SIZE]
    work = flat.astype(_float_dtype_for(values))
    return work[np.isfinite(work)]


def _float_dtype_for(values: np.ndarray) -> np.dtype[np.floating[Any]]:
    """float32 is exact for up to 16-bit data; wider data needs float64."""
    return np.dtype(np.float32) if values.dtype.itemsize <= 2 else np.dtype(np.float64)


def _one_line(exc: BaseException) -> str:
    """A library's error as one line fit for a message: quoted values (which may be any
    bytes of the file, identifiers included) and object addresses are left out."""
    return safe_error_text(str(exc)) or type(exc).__name__


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|b'[^']*'")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def safe_error_text(text: str, limit: int = 300) -> str:
    """``text`` on one line, without quoted values or object reprs, at most ``limit`` chars."""
    text = _OBJECT_REPR.sub("the data", text)
    text = _QUOTED.sub("'…'", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = [
    "SUPPORTED_FORMATS",
    "DecodeErrorKind",
    "DecodeLimits",
    "DecodedImage",
    "ImageDecodeError",
    "decode_file",
    "decode_image",
    "sniff_format",
]
