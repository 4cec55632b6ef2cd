"""A corpus of bad (and a few good) uploads for the service's robustness tests.

Every entry is a name, the bytes, an upload file name and content type, and the set of
statuses ``POST /query`` may answer with. The expectations follow the status table of
docs/service.md: 415 for content that is not an image (or a recognised but unsupported
format), 422 for content that claims a supported format but cannot be decoded, 413 for
declared sizes over the limits, 200 for valid images whatever their file name says.
Nothing is ever 5xx.

(This folder is on ``sys.path`` while its tests run, so tests import it by name.)
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from support.dicom import deflate_bomb, make_dataset, split_part10, to_bytes
from support.images import encode, encode_array, rng_image

NOT_AN_IMAGE = frozenset({415})
UNDECODABLE = frozenset({422})
TOO_LARGE = frozenset({413})
OK = frozenset({200})


@dataclass(frozen=True)
class CorpusFile:
    name: str
    data: bytes
    expected: frozenset[int]
    filename: str = "upload.bin"
    content_type: str = "application/octet-stream"

    def files(self) -> dict[str, tuple[str, bytes, str]]:
        """The ``files=`` argument of an httpx/TestClient multipart upload."""
        return {"file": (self.filename, self.data, self.content_type)}


# --------------------------------------------------------------------------- raster builders


def noise_encoded(image_format: str, **options: object) -> bytes:
    """A 48 × 64 RGB noise image in `image_format` (noise compresses badly, so every cut
    point falls inside the pixel data)."""
    return encode_array(rng_image((48, 64, 3)), image_format, **options)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares `width` × `height` grey pixels, with one tiny IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP whose info header declares `width` × `height`, with 16 bytes of pixels."""
    pixels = b"\x00" * 16
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    offset = 14 + len(info)
    file_header = struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset)
    return file_header + info + pixels


def _cuts(data: bytes, fractions: tuple[float, ...]) -> list[tuple[str, bytes]]:
    return [(f"{int(f * 100)}pct", data[: int(len(data) * f)]) for f in fractions]


# --------------------------------------------------------------------------- DICOM builders


def _grey(rows: int = 64, columns: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    return ((x * 4 + y * 2) % 256).astype(np.uint8)


def dicom_with_phi(pixels: np.ndarray | None = None) -> Dataset:
    """A valid DICOM carrying patient identifiers (which must never be echoed or logged)."""
    return make_dataset(
        _grey() if pixels is None else pixels,
        PatientName="DOE^JOHN",
        PatientID="PID-12345",
        PatientBirthDate="19700101",
        InstitutionName="JOHN DOE MEMORIAL",
        ReferringPhysicianName="DOE^JANE",
        AccessionNumber="ACC-PID-12345",
        StudyDescription="DOE JOHN chest",
    )


PHI_STRINGS = ("DOE", "JOHN", "PID-12345")


def dicom_no_pixel_data() -> bytes:
    ds = make_dataset(None)
    ds.Rows = ds.Columns = 64
    return to_bytes(ds)


def dicom_huge_declared() -> bytes:
    ds = make_dataset(np.zeros((2, 2), np.uint16))
    ds.Rows = ds.Columns = 65535
    return to_bytes(ds)


def dicom_small_declared_mismatch() -> bytes:
    """256 × 256 declared (under every limit) but only 16 bytes of pixel data."""
    ds = make_dataset(np.zeros((4, 4), np.uint8))
    ds.Rows = ds.Columns = 256
    return to_bytes(ds)


def dicom_bogus_transfer_syntax() -> bytes:
    ds = make_dataset(_grey())
    data = to_bytes(ds)
    # Same length as "1.2.840.10008.1.2.1" (19 characters) so the meta group length holds.
    return data.replace(ExplicitVRLittleEndian.encode(), b"1.2.3.4.5.6.7.8.9.0", 1)


def dicom_truncated_pixel_data() -> bytes:
    data = to_bytes(make_dataset(_grey()))
    return data[: len(data) - 64 * 64 // 2]


def dicom_pixel_element_length_lie() -> bytes:
    """The Pixel Data element's length says 4 GiB − 2; half of the 64 × 64 pixels follow."""
    data = to_bytes(make_dataset(_grey()))
    tag = data.rindex(b"\xe0\x7f\x10\x00")  # (7FE0,0010), explicit VR: OB/OW, 2 reserved, UL
    pixels = data[tag + 12 :]
    return data[: tag + 8] + struct.pack("<I", 0xFFFFFFFE) + pixels[: len(pixels) // 2]


def dicom_zero_rows() -> bytes:
    ds = make_dataset(_grey(8, 8))
    ds.Rows = 0
    return to_bytes(ds)


def dicom_deflate_garbage() -> bytes:
    ds = make_dataset(_grey(8, 8))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = split_part10(to_bytes(ds))[0]
    return meta + bytes(np.random.default_rng(7).integers(0, 256, 512, dtype=np.uint8))


def bare_dicom_garbage() -> bytes:
    """No preamble; a group-0008 explicit-VR first tag that sniffs as DICOM, then noise."""
    noise = bytes(np.random.default_rng(3).integers(0, 256, 200, dtype=np.uint8))
    return struct.pack("<HH2sH", 0x0008, 0x0016, b"UI", 0xFFFF) + noise


# --------------------------------------------------------------------------- the corpus


def _random(size: int, seed: int) -> bytes:
    data = bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8))
    return b"\x01" + data[1:]  # no magic can start with 0x01


def _zip() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("scan.png", noise_encoded("PNG"))
    return buffer.getvalue()


def _real(shared_data: Path | None, folder: str, pattern: str) -> bytes | None:
    if shared_data is None:
        return None
    found = sorted((shared_data / folder / "images").glob(pattern))
    return found[0].read_bytes() if found else None


def build_corpus(shared_data: Path | None = None) -> list[CorpusFile]:
    """The corpus; entries built from real images are left out when `shared_data` is None."""
    png, jpeg, tiff, webp, bmp = (
        noise_encoded("PNG"),
        noise_encoded("JPEG", quality=90),
        noise_encoded("TIFF"),
        noise_encoded("WEBP", lossless=True),
        noise_encoded("BMP"),
    )
    files: list[CorpusFile] = []

    def add(name: str, data: bytes, expected: frozenset[int], **kwargs: str) -> None:
        files.append(CorpusFile(name, data, expected, **kwargs))

    # Truncated rasters at several cut points (always after the magic bytes).
    for fmt, data, fractions in (
        ("png", png, (0.05, 0.5, 0.9)),
        ("jpeg", jpeg, (0.05, 0.5, 0.9)),
        ("tiff", tiff, (0.02, 0.3, 0.9)),
        ("webp", webp, (0.2, 0.6, 0.9)),
        ("bmp", bmp, (0.1, 0.5, 0.9)),
    ):
        for label, cut in _cuts(data, fractions):
            add(f"truncated-{fmt}-{label}", cut, UNDECODABLE, filename=f"scan.{fmt}")
    add("png-signature-only", png[:8], UNDECODABLE, filename="a.png", content_type="image/png")
    add("png-signature-garbage", png[:8] + _random(2000, 1)[8:], UNDECODABLE)
    add("jpeg-soi-garbage", b"\xff\xd8\xff" + _random(2000, 2)[3:], UNDECODABLE)
    add("tiff-magic-garbage", b"II*\x00" + _random(500, 4)[4:], UNDECODABLE)
    add("webp-riff-garbage", b"RIFF\x00\x10\x00\x00WEBPVP8 " + _random(300, 5), UNDECODABLE)
    add("png-declares-100000x100000", png_declaring(100_000, 100_000), TOO_LARGE)
    add("png-declares-12000x12000", png_declaring(12_000, 12_000), TOO_LARGE)
    add("png-declares-3000x3000-tiny-idat", png_declaring(3000, 3000), UNDECODABLE)
    add("png-declares-0x0", png_declaring(0, 0), UNDECODABLE)
    add("bmp-declares-huge", bmp_declaring(2_000_000, 2_000_000), TOO_LARGE)
    # Pillow reads the negative width as unsigned: a huge size (413) or a corrupt header (422).
    add("bmp-declares-negative-width", bmp_declaring(-64, 64), TOO_LARGE | UNDECODABLE)
    # DICOM
    add("dicom-magic-only", b"\x00" * 128 + b"DICM", UNDECODABLE, filename="x.dcm")
    add("dicom-no-pixel-data", dicom_no_pixel_data(), UNDECODABLE, filename="x.dcm")
    add("dicom-declares-65535x65535", dicom_huge_declared(), TOO_LARGE, filename="x.dcm")
    add("dicom-declares-more-than-it-holds", dicom_small_declared_mismatch(), UNDECODABLE)
    add("dicom-bogus-transfer-syntax", dicom_bogus_transfer_syntax(), NOT_AN_IMAGE)
    add("dicom-truncated-pixel-data", dicom_truncated_pixel_data(), UNDECODABLE)
    add("dicom-pixel-length-4gib", dicom_pixel_element_length_lie(), UNDECODABLE)
    add("dicom-zero-rows", dicom_zero_rows(), UNDECODABLE)
    add("dicom-deflate-bomb-1gib", deflate_bomb(1024), TOO_LARGE, filename="bomb.dcm")
    add("dicom-deflate-garbage", dicom_deflate_garbage(), UNDECODABLE)
    add("dicom-bare-garbage", bare_dicom_garbage(), UNDECODABLE)
    # Not images at all, or formats recognised but not decoded
    add("empty", b"", NOT_AN_IMAGE, filename="empty.png", content_type="image/png")
    for size, seed in ((1, 10), (129, 12), (300_000, 14)):
        add(f"random-{size}-bytes", _random(size, seed), NOT_AN_IMAGE)
    add("text", b"patient list\nnothing to see\n" * 20, NOT_AN_IMAGE, content_type="text/plain")
    add("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", NOT_AN_IMAGE)
    add("gif", noise_encoded("GIF"), NOT_AN_IMAGE, filename="a.gif", content_type="image/gif")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'
    add("svg", svg, NOT_AN_IMAGE, filename="a.svg", content_type="image/svg+xml")
    add("zip-of-a-png", _zip(), NOT_AN_IMAGE, filename="scans.zip")
    add("bm-text", b"BM is not a bitmap header, just text" * 4, NOT_AN_IMAGE)
    # Valid images whose name or declared type lies: the content decides.
    add("png-named-dcm", png, OK, filename="scan.dcm", content_type="application/dicom")
    add("jpeg-named-txt", jpeg, OK, filename="notes.txt", content_type="text/plain")
    add("dicom-named-jpg", to_bytes(make_dataset(_grey())), OK, filename="a.jpg")
    add("webp-no-extension", webp, OK, filename="upload", content_type="")
    # Valid but odd: degenerate shapes, no contrast, NaN, CMYK, 1-bit, RGB DICOM.
    add("png-1x1", encode_array(np.full((1, 1), 9, np.uint8), "PNG"), OK)
    add("png-1x100000", encode_array(np.full((1, 100_000), 9, np.uint8), "PNG"), OK)
    add("png-100000x1", encode_array(np.full((100_000, 1), 9, np.uint8), "PNG"), OK)
    add("png-16-bit-constant", encode_array(np.full((8, 8), 300, np.uint16), "PNG"), OK)
    add("tiff-float-nan-inf", encode_array(np.array([[np.nan, np.inf]], np.float32), "TIFF"), OK)
    add("bmp-1-bit", encode_array(np.zeros((8, 8), bool), "BMP"), OK)
    add("jpeg-cmyk", encode(Image.new("CMYK", (8, 8), (0, 50, 100, 0)), "JPEG"), OK)
    add("dicom-1x60000", to_bytes(make_dataset(np.zeros((1, 60_000), np.uint8))), OK)
    add("dicom-rgb", to_bytes(make_dataset(np.zeros((8, 8, 3), np.uint8), "RGB")), OK)
    # Real images: whole (fine) and truncated (undecodable).
    real_png = _real(shared_data, "chestxray14", "*.png")
    if real_png is not None:
        add("chestxray14-png", real_png, OK, filename="cxr.png", content_type="image/png")
        for label, cut in _cuts(real_png, (0.1, 0.5, 0.95)):
            add(f"chestxray14-png-truncated-{label}", cut, UNDECODABLE, filename="cxr.png")
    real_jpeg = _real(shared_data, "ham10000", "*.jpg")
    if real_jpeg is not None:
        add("ham10000-jpeg", real_jpeg, OK, filename="derm.jpg", content_type="image/jpeg")
        for label, cut in _cuts(real_jpeg, (0.1, 0.5, 0.95)):
            add(f"ham10000-jpeg-truncated-{label}", cut, UNDECODABLE, filename="derm.jpg")
    names = [f.name for f in files]
    assert len(names) == len(set(names)), "corpus names must be unique"
    return files


__all__ = [
    "PHI_STRINGS",
    "CorpusFile",
    "build_corpus",
    "dicom_with_phi",
    "png_declaring",
]
