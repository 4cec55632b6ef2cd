"""Bytes → pixels: the one entry point that turns an uploaded file into a uint8 array.

Decisions, in the order a file meets them:

* **Limits** (:mod:`imaging.limits`): the byte count first, before anything is parsed.
* **Format by content** (:mod:`imaging.formats`): magic bytes, never a file name; what
  is not a supported format is ``NOT_AN_IMAGE`` or ``UNSUPPORTED`` naming the format.
* **Decoder**: :mod:`imaging.raster` (Pillow) for PNG, JPEG, TIFF, BMP and WebP;
  :mod:`imaging.dicom` for DICOM, imported only when a DICOM arrives (pydicom is slow to
  import and most callers never see one).
* **Errors** (:mod:`imaging.errors`): only :class:`~imaging.errors.ImageDecodeError`
  leaves :func:`decode_image`, whatever the bytes. Pillow's decompression-bomb limit and
  running out of memory are ``TOO_LARGE``; every other library failure is ``CORRUPT``, and
  so is a Rust extension's panic (pyo3 ``PanicException``, a BaseException).
  Library warnings are silenced for the duration of a decode only
  (``warnings.catch_warnings``), never globally; before Python 3.14 that context manager
  swaps process-wide state, so decodes running in several *threads* at once can leave the
  "ignore" filter installed — decode in worker processes where that matters.

The result is always a C-contiguous ``uint8`` array of shape (H, W, 1) or (H, W, 3)
(:class:`~imaging.pixels.DecodedImage`).

This module is what callers import: besides the two entry points it names (``__all__``)
the types a caller needs, defined in the modules above.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from imaging.errors import (
    DecodeErrorKind,
    ImageDecodeError,
    corrupt,
    is_library_panic,
    one_line,
)
from imaging.formats import SUPPORTED_FORMATS, sniff_format, unrecognised_content_error
from imaging.limits import DEFAULT_LIMITS, DecodeLimits, check_byte_count
from imaging.pixels import DecodedImage
from imaging.raster import decode_raster

logger = logging.getLogger(__name__)

# A format decoder: (data, source format, limits) → image.
_Decoder = Callable[[bytes, str, DecodeLimits], DecodedImage]


def decode_image(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> DecodedImage:
    """Decode `data` (PNG, JPEG, TIFF, BMP, WebP or DICOM, recognised by content).

    Raises :class:`~imaging.errors.ImageDecodeError` (and nothing else) for any input bytes.
    """
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    check_byte_count(len(data), limits)
    if not data:
        raise ImageDecodeError("not an image: the content is empty", DecodeErrorKind.NOT_AN_IMAGE)
    source_format = sniff_format(data)
    if source_format is None:
        raise unrecognised_content_error(data)
    decoder: _Decoder = _decode_dicom if source_format == "DICOM" else decode_raster
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            image = decoder(data, source_format, limits)
        except ImageDecodeError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(
                f"image is over Pillow's decompression-bomb limit: {one_line(exc)}",
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


def _corrupt_content_error(source_format: str, exc: BaseException) -> ImageDecodeError:
    return corrupt(f"truncated or corrupt {source_format}: {one_line(exc)}")


def _decode_dicom(data: bytes, source_format: str, limits: DecodeLimits) -> DecodedImage:
    from imaging.dicom.decode import decode_dicom  # pydicom is imported only when DICOM arrives

    return decode_dicom(data, limits)


__all__ = [
    "DEFAULT_LIMITS",
    "SUPPORTED_FORMATS",
    "DecodeErrorKind",
    "DecodeLimits",
    "DecodedImage",
    "ImageDecodeError",
    "decode_file",
    "decode_image",
    "sniff_format",
]
