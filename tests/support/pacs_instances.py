"""DICOM instances for the PACS tests: studies of distinct images carrying marker identities.

:func:`make_instances` builds seeded, valid Part 10 files grouped into studies (one series
each) whose patient attributes are the markers below, so a privacy test can check that
none of them ever leaves the indexer; :func:`uids_of` reads back an instance's UIDs and
:func:`corrupt_instance` is a file a PACS stores but whose pixels cannot be decoded.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from support.dicom import make_dataset, to_bytes

PATIENT_NAME = "PACS^MARKER^NAME"
PATIENT_ID = "PACSMARKERID123"
PATIENT_BIRTH_DATE = "19010101"
MARKERS = (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE)
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as generate_uid uses


def make_instances(
    n: int, *, seed: int = 0, studies: int = 2, size: int = 32, modality: str = "CR"
) -> list[bytes]:
    """`n` distinct Part 10 instances of `size` × `size` MONOCHROME2 pixels (16-bit, 12
    stored), dealt round-robin into `studies` studies of one series each; the same `seed`
    gives the same bytes (and UIDs: use another seed for another set)."""
    rng = np.random.default_rng(seed)
    study_count = max(1, min(studies, n))
    study_uids = [_uid(seed, "study", s) for s in range(study_count)]
    series_uids = [_uid(seed, "series", s) for s in range(study_count)]
    instances = []
    for index in range(n):
        study = index % study_count
        day = f"2020{1 + study % 12:02d}{1 + study // 12 % 28:02d}"
        ds = make_dataset(
            _pixels(rng, size),
            bits_stored=12,
            Modality=modality,
            StudyInstanceUID=study_uids[study],
            SeriesInstanceUID=series_uids[study],
            SOPInstanceUID=_uid(seed, "instance", index),
            StudyDate=day,
            StudyTime="101500",
            SeriesDate=day,
            SeriesTime="101600",
            SeriesNumber=1,
            InstanceNumber=index // study_count + 1,
            StudyID=f"S{study}",
            AccessionNumber=f"ACC{seed}{study}",
            PatientName=PATIENT_NAME,
            PatientID=PATIENT_ID,
            PatientBirthDate=PATIENT_BIRTH_DATE,
            PatientSex="O",
        )
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        instances.append(to_bytes(ds))
    return instances


def _uid(seed: int, kind: str, index: int) -> str:
    return generate_uid(UID_ROOT, entropy_srcs=[f"medret-pacs-{seed}-{kind}-{index}"])


def _pixels(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random blocky pattern: each instance visibly different, none uniform."""
    blocks = rng.integers(0, 4096, (4, 4))
    pattern = np.kron(blocks, np.ones((size // 4 + 1, size // 4 + 1)))[:size, :size]
    noise = rng.integers(0, 256, (size, size))
    return np.clip(pattern + noise, 0, 4095).astype(np.uint16)


def uids_of(data: bytes) -> tuple[str, str, str]:
    """(StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID) of Part 10 `data`."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def corrupt_instance(*, seed: int = 99) -> bytes:
    """A Part 10 instance with a valid header and UIDs whose pixel data is truncated to
    half of what Rows × Columns × BitsAllocated promise, so decoding its pixels fails."""
    ds = pydicom.dcmread(io.BytesIO(make_instances(1, seed=seed, studies=1)[0]))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    return to_bytes(ds)
