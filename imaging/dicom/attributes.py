"""Reading one attribute value safely: an integer, the first number, a UID as text.

A DICOM value may be anything the file says, identifiers included, so a value that does
not parse is either ``CORRUPT`` (with at most 40 characters of it) or left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from pydicom.dataset import Dataset

from imaging.errors import corrupt


def int_attribute(dataset: Dataset, keyword: str) -> int | None:
    """`keyword` as an int: ``None`` if absent or empty, ``CORRUPT`` if not a number."""
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise corrupt(f"invalid {keyword} {str(value)[:40]!r}") from None


def first_number(value: object) -> float | None:
    """The first of a (possibly multi-valued) number; ``None`` if it is not a finite one."""
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value:
            return None
        value = value[0]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


_WELL_FORMED_UID = re.compile(r"(?=.{1,64}$)[0-9]+(\.[0-9]+)*")


def uid_text(uid: object) -> str:
    """A UID as text when it is a well-formed UID (digits and dots, ≤ 64 characters);
    "malformed UID" otherwise — a malformed value may hold anything, identifiers included."""
    text = str(uid or "").strip(" \x00")
    return text if _WELL_FORMED_UID.fullmatch(text) else "malformed UID"
