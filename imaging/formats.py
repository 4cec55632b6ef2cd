"""Which format a file holds, by its content: magic bytes only, never a file name.

``DICM`` at offset 128 wins over everything else (a DICOM preamble may itself hold a TIFF
header); then PNG, JPEG, TIFF (classic and BigTIFF), BMP (``BM`` plus a known info-header
size), WebP (``RIFF....WEBP``); last a preamble-less DICOM whose first element is in group
0x0002 or 0x0008 with a plausible VR or length. :func:`sniff_format` returns only the
formats we decode (:data:`SUPPORTED_FORMATS`); formats we recognise but do not decode
(GIF, ICO, PDF, JPEG 2000 files, JPEG XL, AVIF, HEIF, PSD, NIfTI, OpenEXR) are named by
:func:`unrecognised_content_error` as ``UNSUPPORTED``.
"""

from __future__ import annotations

import struct

from imaging.errors import DecodeErrorKind, ImageDecodeError

SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "DICOM")
_READABLE_FORMAT_LIST = "PNG, JPEG, TIFF, BMP, WebP, DICOM"

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
    supported (GIF, PDF, …) give ``None`` here; :func:`unrecognised_content_error` names them.
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


def unrecognised_content_error(data: bytes) -> ImageDecodeError:
    """The error for `data` that :func:`sniff_format` does not name: ``UNSUPPORTED`` naming
    a format we recognise but do not decode, else ``NOT_AN_IMAGE``."""
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
