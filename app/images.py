"""A case's picture: the archived original, a PNG rendering, and cached thumbnails.

Paths come only from the case's ``source_uri`` in SQL (written by the indexer), never from
the client. The bytes are checked against the case's content hash, so the service never
shows a picture other than the one that was indexed. A case indexed from a PACS is
fetched from it again; a PACS that does not answer is a 504 (timeout) or 502.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from archives.content import decode_content, indexed_sample, sample_content
from dicomweb.errors import DicomwebError, PacsUnavailableError
from files.atomic import atomic_write_bytes
from imaging.decode import DecodeErrorKind, DecodeLimits, ImageDecodeError, sniff_format
from indexer.store import CaseInfo

log = logging.getLogger(__name__)

BROWSER_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


class CaseImageError(Exception):
    """The case's picture cannot be shown (gone, changed since indexing, unreadable)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Picture:
    content: bytes
    media_type: str


def _content(case: CaseInfo, limits: DecodeLimits) -> bytes | np.ndarray:
    try:
        digest, content = sample_content(indexed_sample(case.external_id, case.source_uri), limits)
    except FileNotFoundError:
        raise CaseImageError(410, f"case {case.id}'s image is no longer in the archive") from None
    except DicomwebError as exc:
        raise _pacs_error(case, exc) from None
    except (OSError, ValueError, KeyError, IndexError) as exc:
        # the exception names the file: it goes to the log, never into the answer
        log.warning("case %d's image cannot be read: %s", case.id, exc)
        raise CaseImageError(
            410, f"case {case.id}'s image cannot be read from the archive ({_reason(exc)})"
        ) from None
    if digest != case.content_hash:
        raise CaseImageError(
            409,
            f"case {case.id}'s image has changed in the archive since it was indexed; "
            "reindex the collection",
        )
    return content


def _pacs_error(case: CaseInfo, exc: DicomwebError) -> CaseImageError:
    """A PACS failure while fetching the case (the message names the server, never the
    credentials)."""
    log.warning("case %d's image cannot be fetched from the PACS: %s", case.id, exc)
    if isinstance(exc, PacsUnavailableError):
        if exc.timed_out:
            return CaseImageError(504, f"the PACS did not answer in time for case {case.id}")
        return CaseImageError(502, f"the PACS holding case {case.id} is unavailable")
    return CaseImageError(502, f"the PACS holding case {case.id} refused or failed the request")


def _reason(exc: Exception) -> str:
    """Why a file cannot be read, in words that name no path ("Permission denied")."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return "not a readable image file or array"


def _png(pixels: np.ndarray, max_side: int | None = None) -> bytes:
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    if max_side is not None:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _pixels(case: CaseInfo, content: bytes | np.ndarray, limits: DecodeLimits) -> np.ndarray:
    try:
        pixels, _ = decode_content(content, limits)
    except ImageDecodeError as exc:
        if exc.kind is DecodeErrorKind.BUSY:  # other decodes hold the budget: retry later
            raise CaseImageError(503, str(exc)) from None
        raise CaseImageError(410, f"case {case.id}'s image cannot be decoded: {exc}") from None
    return pixels


def case_pixels(case: CaseInfo, limits: DecodeLimits) -> np.ndarray:
    """The case's decoded pixels, checked against its content hash."""
    return _pixels(case, _content(case, limits), limits)


def case_picture(case: CaseInfo, limits: DecodeLimits) -> Picture:
    """The original when a browser shows it as is (PNG, JPEG, WebP), else a PNG rendering
    (DICOM, TIFF, BMP, array images)."""
    content = _content(case, limits)
    if isinstance(content, bytes):
        fmt = sniff_format(content)
        if fmt in BROWSER_FORMATS:
            return Picture(content, BROWSER_FORMATS[fmt])
    return Picture(_png(_pixels(case, content, limits)), "image/png")


def render_preview(pixels: np.ndarray, max_side: int) -> bytes:
    """A PNG of decoded pixels no larger than ``max_side`` (the viewer's query preview)."""
    return _png(pixels, max_side)


def case_thumbnail(case: CaseInfo, cache_dir: Path, max_side: int, limits: DecodeLimits) -> Path:
    """A cached PNG thumbnail, keyed by content hash and size (so it can never go stale)."""
    path = cache_dir / f"{case.content_hash}-{max_side}.png"
    if path.is_file():
        return path
    png = _png(_pixels(case, _content(case, limits), limits), max_side)
    atomic_write_bytes(path, png)  # replicas may share the cache folder
    return path
