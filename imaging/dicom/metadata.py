"""The allowlisted, non-identifying metadata of a DICOM object, as strings.

Only the attributes in :data:`METADATA_ATTRIBUTES` (modality, body part, view position,
laterality, study date, manufacturer and model, and image geometry) plus the names of the
SOP class and transfer syntax, the number of frames and the frame shown. Because it is an
allowlist, nothing on the PS3.15 basic de-identification list (patient name, ID, birth
date, address, institution, physicians, accession number, study/series/instance UIDs, …)
can leak into it — with one deliberate exception: Study Date is on that list (action Z)
and is kept because retrieval results are compared by date; drop ``study_date`` here if
dates must not be shown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.uid import UID

from imaging.dicom.attributes import uid_text
from imaging.dicom.codecs import transfer_syntax_name

logger = logging.getLogger(__name__)

# (metadata key, DICOM keywords tried in order). The allowlist: nothing else is reported.
METADATA_ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("modality", ("Modality",)),
    ("body_part", ("BodyPartExamined",)),
    ("view_position", ("ViewPosition",)),
    ("laterality", ("ImageLaterality", "Laterality")),
    ("study_date", ("StudyDate",)),
    ("manufacturer", ("Manufacturer",)),
    ("manufacturer_model", ("ManufacturerModelName",)),
    ("photometric", ("PhotometricInterpretation",)),
    ("rows", ("Rows",)),
    ("columns", ("Columns",)),
    ("bits_stored", ("BitsStored",)),
    ("pixel_spacing", ("PixelSpacing", "ImagerPixelSpacing")),
)
_METADATA_MAX_CHARS = 128


def describe_dicom(
    dataset: Dataset, transfer_syntax: UID, frame_index: int, frame_count: int
) -> dict[str, str]:
    """The allowlisted, non-identifying metadata of `dataset`, as strings."""
    metadata: dict[str, str] = {}
    for key, keywords in METADATA_ATTRIBUTES:
        text = _first_metadata_text(dataset, keywords)
        if text:
            metadata[key] = text
    metadata["number_of_frames"] = str(frame_count)
    metadata["frame_index"] = str(frame_index)
    sop_class = sop_class_name(dataset)
    if sop_class != "unknown":
        metadata["sop_class"] = sop_class
    name = transfer_syntax_name(transfer_syntax) or uid_text(transfer_syntax)
    metadata["transfer_syntax"] = _metadata_text(name) or "unknown"
    return metadata


def sop_class_name(dataset: Dataset) -> str:
    """The name of the SOP class of `dataset`, or "unknown" (used in messages and metadata)."""
    try:
        uid = dataset.get("SOPClassUID") or dataset.file_meta.get("MediaStorageSOPClassUID")
        text = uid_text(uid)
        if text == "malformed UID":
            return "unknown"
        return _metadata_text(UID(text).name) or "unknown"
    except Exception:  # only used in messages and metadata
        return "unknown"


def _first_metadata_text(dataset: Dataset, keywords: tuple[str, ...]) -> str | None:
    for keyword in keywords:
        try:
            text = _metadata_text(dataset.get(keyword))
        except Exception:  # an unreadable value is left out, never fatal
            logger.debug("leaving out unreadable DICOM %s", keyword)
            continue
        if text:
            return text
    return None


def _metadata_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        text = "\\".join(str(v) for v in value)
    elif isinstance(value, bytes):
        return None
    else:
        text = str(value)
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return text[:_METADATA_MAX_CHARS] or None
