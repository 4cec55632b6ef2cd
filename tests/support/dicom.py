"""DICOM files for tests, built with pydicom: the one builder every test suite uses.

:func:`make_dataset` is a Secondary Capture data set holding pixels natively (explicit VR
little endian), :func:`to_bytes` writes it as Part 10 bytes, and :func:`dicom_bytes` is
both for a monochrome 12-bit image. The rest build what the decoder's tests need:
encapsulated frames, deflated data sets (and a deflate bomb), test pixel patterns, and
pydicom's own shipped test files.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


# --------------------------------------------------------------------------- data sets


def make_dataset(
    pixels: np.ndarray | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    *,
    sop_class: str = SECONDARY_CAPTURE,
    **attributes: object,
) -> Dataset:
    """A data set of `sop_class` holding `pixels` natively (explicit VR little endian).

    `bits_stored` defaults to the bits of the pixels' dtype; without `pixels` there is no
    pixel data. ``Modality`` is "OT"; `attributes` (e.g. ``Modality="CT"``) are set last.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    if pixels is not None:
        _set_pixels(ds, pixels, photometric, bits_stored)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, photometric: str, bits_stored: int | None) -> None:
    bits_allocated = pixels.dtype.itemsize * 8
    if bits_allocated <= 16:
        ds.set_pixel_data(pixels, photometric, bits_stored or bits_allocated)
        return
    # pydicom's set_pixel_data stops at 16 bits
    ds.set_pixel_data(pixels.astype(np.uint16), photometric, 16)
    ds.BitsAllocated, ds.BitsStored = bits_allocated, bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()


def to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes (preamble, DICM, file meta) in the data set's transfer syntax."""
    buffer = io.BytesIO()
    if ds.file_meta.TransferSyntaxUID.is_transfer_syntax:
        ds.save_as(buffer, enforce_file_format=True)
    else:  # a private transfer syntax: pydicom needs to be told the encoding
        ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def dicom_bytes(
    pixels: np.ndarray, *, sop_class: str = SECONDARY_CAPTURE, **attributes: object
) -> bytes:
    """A monochrome 12-bit DICOM Part 10 file holding ``pixels`` (2-D, stored as uint16);
    ``Modality`` is "CR"; ``attributes`` (e.g. ``Modality="CT"``, ``RescaleIntercept=-1024``)
    are set last."""
    fields: dict[str, object] = {"Modality": "CR", **attributes}
    return to_bytes(
        make_dataset(pixels.astype(np.uint16), bits_stored=12, sop_class=sop_class, **fields)
    )


def encapsulated(
    ds: Dataset, frames: list[bytes], transfer_syntax: UID, photometric: str | None = None
) -> Dataset:
    """`ds` with `frames` (compressed streams) as its encapsulated pixel data."""
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    if photometric is not None:
        ds.PhotometricInterpretation = photometric
    return ds


def pillow_jpeg(pixels: np.ndarray, **save_options: object) -> bytes:
    """A baseline JPEG (quality 95) of uint8 `pixels`, to encapsulate."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, **save_options)
    return buffer.getvalue()


# --------------------------------------------------------------------------- pixels


def ramp(rows: int, columns: int, top: int, dtype: type[np.integer]) -> np.ndarray:
    """Values 0..top increasing along each row and down the image."""
    values = np.linspace(0, top, rows * columns).round()
    return values.astype(dtype).reshape(rows, columns)


def smooth_rgb(rows: int = 32, columns: int = 32) -> np.ndarray:
    """uint8 RGB gradients: red along the rows, green down the columns, blue diagonal."""
    y, x = np.mgrid[0:rows, 0:columns]
    return np.stack([x * 255 // (columns - 1), y * 255 // (rows - 1), (x + y) * 2], -1).astype(
        np.uint8
    )


def grey16() -> np.ndarray:
    """A 32 × 32 12-bit ramp (0..4000) with one value out of order, so that frames are not
    trivially predictable."""
    pixels = ramp(32, 32, 4000, np.uint16)
    pixels[5, 7] = 123
    return pixels


# --------------------------------------------------------------------------- deflate


def split_part10(data: bytes) -> tuple[bytes, bytes]:
    """(preamble, DICM and file meta; the data set after it) of Part 10 bytes."""
    (group_length,) = struct.unpack_from("<I", data, 140)  # (0002,0000) UL, first element
    meta_end = 144 + group_length
    return data[:meta_end], data[meta_end:]


def raw_deflate(data: bytes, final: bool = True) -> bytes:
    """`data` as a raw deflate stream (PS3.5 A.5); ``final=False`` ends with a full flush."""
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
    header = split_part10(to_bytes(ds))[1]  # explicit VR little endian
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = split_part10(to_bytes(ds))[0]
    pixel_bytes = inflated_mib * 2**20
    header += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, pixel_bytes)
    zero_mib = raw_deflate(bytes(2**20), final=False)
    body = raw_deflate(header, final=False) + zero_mib * inflated_mib + raw_deflate(b"")
    return meta + body
