"""The one worker step from a sample to the model's canvas: read → hash → decode → letterbox.

The training pixel cache and the indexer both run :func:`prepare_sample` in their
DataLoader workers, so a file gets the same content hash (a case's identity) and the same
uint8 canvas wherever it is read; the service letterboxes an upload with the same
:func:`~imaging.preprocessing.fit_to_canvas`.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field

import torch

from archives.content import decode_content, sample_content
from archives.records import Sample
from imaging.decode import DEFAULT_LIMITS, DecodeLimits, ImageDecodeError
from imaging.preprocessing import fit_to_canvas


@dataclass(frozen=True)
class PreparedSample:
    """One sample after the worker step: its canvas, or why there is none."""

    content_hash: str  # SHA-256 of the content; "" when it could not be read
    canvas: torch.Tensor | None  # uint8 (3, H, W); None when skipped or unreadable
    metadata: Mapping[str, str] = field(default_factory=dict)  # non-identifying, from DICOM
    error: str = ""  # why the sample is unreadable; "" otherwise
    skipped: bool = False  # hashed only: its hash was in ``skip``, or ``decode`` was off


def prepare_sample(
    sample: Sample,
    size: tuple[int, int],
    limits: DecodeLimits = DEFAULT_LIMITS,
    *,
    skip: Container[str] = frozenset(),
    decode: bool = True,
) -> PreparedSample:
    """Hash ``sample``'s content and, unless its hash is in ``skip`` (or ``decode`` is off),
    decode and letterbox it to ``size``. Never raises for an unreadable sample: the reason
    is in ``error``."""
    try:
        digest, content = sample_content(sample, limits)
    except ImageDecodeError as exc:  # a file over limits.max_bytes
        return PreparedSample("", None, error=str(exc))
    except (OSError, ValueError, KeyError, IndexError) as exc:
        return PreparedSample("", None, error=f"cannot read: {exc}")
    if not decode or digest in skip:
        return PreparedSample(digest, None, skipped=True)
    try:
        pixels, metadata = decode_content(content, limits)
    except ImageDecodeError as exc:
        return PreparedSample(digest, None, error=str(exc))
    return PreparedSample(digest, fit_to_canvas(pixels, size), dict(metadata))
