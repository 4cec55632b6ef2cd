"""How large an input may be: refused before memory is spent on it.

``max_bytes`` is checked before anything is parsed (and by
:func:`imaging.decode.decode_file` before the file is read); ``max_pixels`` (width ×
height of one frame) is checked from the header, before any pixel data is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from imaging.errors import DecodeErrorKind, ImageDecodeError


@dataclass(frozen=True)
class DecodeLimits:
    """Refuse inputs over these sizes before spending memory on them."""

    max_bytes: int = 512 * 2**20
    max_pixels: int = 100_000_000  # per decoded frame (width * height)

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ValueError(f"limits must be positive, got {self}")


DEFAULT_LIMITS = DecodeLimits()


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
