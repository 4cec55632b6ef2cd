"""A sample's content: its bytes (or array pixels), their hash, and the decoded pixels.

Files are decoded by content, not by extension; array samples are cut from their ``.npz``
array, the last few arrays read being kept in memory (the npz cache); instances of a PACS
are retrieved over DICOMweb (WADO-RS, :mod:`dicomweb.client`) and then decoded like a file.

A PACS that does not answer raises :class:`dicomweb.errors.PacsUnavailableError`, which
is not one of the errors an unreadable sample raises: whoever reads many samples stops
instead of skipping every one of them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from archives.records import ArchiveError, ArrayRef, Sample
from dicomweb.client import fetch_instance
from dicomweb.errors import (
    DicomwebError,
    InstanceNotFoundError,
    InstanceTooLargeError,
    PacsRefusedError,
    PacsUnavailableError,
)
from dicomweb.refs import InstanceRef
from imaging.decode import DEFAULT_LIMITS, DecodeLimits, decode_file, decode_image
from imaging.errors import DecodeErrorKind, ImageDecodeError
from imaging.limits import check_byte_count


def indexed_sample(key: str, source_uri: str) -> Sample:
    """The sample an indexed case was read from, by the ``source_uri`` the indexer stored:
    a DICOMweb instance (``InstanceRef``), an array reference (``ArrayRef``) or a file."""
    remote = InstanceRef.from_uri(source_uri)
    if remote is not None:
        return Sample(key=key, labels=(), split="", remote=remote)
    ref = ArrayRef.from_uri(source_uri)
    if ref is not None:
        return Sample(key=key, labels=(), split="", array=ref)
    return Sample(key=key, labels=(), split="", path=Path(source_uri))


def sample_content(
    sample: Sample, limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[str, bytes | np.ndarray]:
    """(content SHA-256, what to decode): a file's bytes, read once, or an array's pixels.

    The hash is a case's content identity (the training cache and the indexer key on it).
    Raises :class:`imaging.decode.ImageDecodeError` (``TOO_LARGE``) for a file over
    ``limits.max_bytes``, OSError/ValueError/KeyError/IndexError for content that cannot be
    read at all (a PACS instance that is gone: ``FileNotFoundError``), and
    :class:`~dicomweb.errors.PacsUnavailableError` or
    :class:`~dicomweb.errors.PacsRefusedError` when the PACS cannot be asked.
    """
    if sample.remote is not None:
        data = remote_bytes(sample.remote, limits)
        return hashlib.sha256(data).hexdigest(), data
    if sample.path is not None:
        check_byte_count(sample.path.stat().st_size, limits)
        with sample.path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)  # decode_image refuses anything longer
        return hashlib.sha256(data).hexdigest(), data
    pixels = np.ascontiguousarray(load_pixels(sample, limits), dtype=np.uint8)
    digest = hashlib.sha256(b"array:" + repr(pixels.shape).encode() + b":")
    digest.update(pixels.tobytes())
    return digest.hexdigest(), pixels


def decode_content(
    content: bytes | np.ndarray, limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[np.ndarray, Mapping[str, str]]:
    """(uint8 pixels, non-identifying metadata) of what :func:`sample_content` returned."""
    if isinstance(content, bytes):
        decoded = decode_image(content, limits)
        return decoded.pixels, decoded.metadata
    return content, {}


def load_pixels(sample: Sample, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The sample's pixels: uint8 (H, W, 1) or (H, W, 3).

    Files are decoded by content (:func:`imaging.decode.decode_file`, whose errors pass
    through); array samples are cut from their ``.npz`` array, the last few arrays read
    being kept in memory.
    """
    if sample.path is not None:
        return decode_file(sample.path, limits).pixels
    if sample.remote is not None:
        return decode_image(remote_bytes(sample.remote, limits), limits).pixels
    if sample.array is None:
        raise ArchiveError(f"sample {sample.key!r} has neither a file nor an array")
    ref = sample.array
    array = _cached_npz_array(str(ref.file), ref.file.stat().st_mtime_ns, ref.array)
    pixels = array[ref.index]
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return np.array(pixels, dtype=np.uint8, order="C")  # a copy: the cache stays intact


def remote_bytes(ref: InstanceRef, limits: DecodeLimits = DEFAULT_LIMITS) -> bytes:
    """The Part-10 bytes of a PACS instance, within ``limits.max_bytes``.

    Like a file: a missing instance is ``FileNotFoundError``, one over the limit
    ``TOO_LARGE``, one the PACS answers oddly for (another 4xx, a malformed body)
    ``OSError``; all of them are skipped by whoever reads many. A PACS that does not answer
    (:class:`PacsUnavailableError`), refuses our credentials (401/403) or redirects (a
    login page) raises: no other instance would be read either."""
    try:
        return fetch_instance(ref, limits.max_bytes)
    except InstanceNotFoundError:
        raise FileNotFoundError(f"the PACS no longer holds instance {ref.sop}") from None
    except PacsRefusedError as exc:
        if exc.status in (401, 403) or 300 <= exc.status < 400:
            raise  # credentials or a login redirect: no instance will be read
        raise OSError(f"the PACS refused instance {ref.sop}: {exc}") from None
    except PacsUnavailableError:
        raise
    except InstanceTooLargeError:
        raise ImageDecodeError(
            f"PACS instance {ref.sop} is over the limit of {limits.max_bytes} bytes",
            DecodeErrorKind.TOO_LARGE,
        ) from None
    except DicomwebError as exc:  # an answer that is not one instance: skip this one
        raise OSError(f"instance {ref.sop}: {exc}") from None


@functools.lru_cache(maxsize=4)
def _cached_npz_array(file: str, mtime_ns: int, name: str) -> np.ndarray:
    """A whole array of an npz (decompressing it per sample would be far too slow)."""
    del mtime_ns  # part of the cache key only: a rewritten file is read again
    with np.load(file, allow_pickle=False) as npz:
        return np.asarray(npz[name])
