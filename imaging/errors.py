"""Why a decode failed: the one error type that leaves the decoders, and its kinds.

Only :class:`ImageDecodeError` leaves :func:`imaging.decode.decode_image`, whatever the
bytes: ``NOT_AN_IMAGE`` (no known format), ``UNSUPPORTED`` (known but not decoded, e.g.
GIF or a DICOM transfer syntax without a decoder), ``CORRUPT`` (claims to be a supported
format but does not decode: truncated, bad checksum, a DICOM without pixel data, a
declared size that the data cannot hold), ``TOO_LARGE`` (over
:class:`imaging.limits.DecodeLimits`, over Pillow's decompression-bomb limit, or out of
memory), ``BUSY`` (other decodes held the shared budget for longer than the wait allows).
A library's message is only passed on through :func:`safe_error_text`, because
it may quote any bytes of the file, identifiers included.
"""

from __future__ import annotations

import enum
import re


class DecodeErrorKind(enum.StrEnum):
    """Why a decode failed; ``app/`` maps each kind to an HTTP status."""

    NOT_AN_IMAGE = "not_an_image"  # matches no image/DICOM format we know (415)
    UNSUPPORTED = "unsupported"  # a format or DICOM variant we know but do not decode (415)
    CORRUPT = "corrupt"  # claims to be a supported format but cannot be decoded (422)
    TOO_LARGE = "too_large"  # over a limit of imaging.limits.DecodeLimits, or out of memory (413)
    BUSY = "busy"  # the decode budget stayed taken by other decodes for too long (503)


class ImageDecodeError(ValueError):
    """The input cannot become pixels; ``str(err)`` is a one-line reason for a person."""

    kind: DecodeErrorKind

    def __init__(self, message: str, kind: DecodeErrorKind) -> None:
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[str, DecodeErrorKind]]:
        # Keeps the error picklable (worker processes send it back to the parent).
        return (type(self), (str(self), self.kind))


def corrupt(message: str) -> ImageDecodeError:
    """A ``CORRUPT`` error with `message`."""
    return ImageDecodeError(message, DecodeErrorKind.CORRUPT)


def is_library_panic(exc: BaseException) -> bool:
    """A Rust extension's panic (pyo3 ``PanicException``: a BaseException, not an Exception).

    pylibjpeg-rle, for one, panics on some malformed RLE segments.
    """
    return type(exc).__name__ == "PanicException"


def one_line(exc: BaseException) -> str:
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
