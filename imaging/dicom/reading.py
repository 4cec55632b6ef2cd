"""Bytes → a pydicom data set, and the pydicom settings that reading relies on.

``pydicom.dcmread(force=True)`` on the in-memory bytes, so Part 10 files and
preamble-less/meta-less streams are both read; nothing touches the disk. A deflated data
set is inflated by :mod:`imaging.dicom.deflate` under a cap, not by pydicom.

pydicom keeps its settings process-wide. :func:`configure_pydicom` applies ours; it is
called where reading starts (:func:`read_dataset`), never at import, so importing this
package changes nothing in pydicom.
"""

from __future__ import annotations

import io
import threading

import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from imaging.dicom.deflate import inflate_deflated_dataset
from imaging.limits import DecodeLimits

_configure_lock = threading.Lock()
_configured = False


def configure_pydicom() -> None:
    """Turn off pydicom's value checks on reading; idempotent and thread-safe.

    Those checks warn (and log) with the raw value quoted, and an invalid value may be a
    patient's name or id written into the wrong element: files are decoded without them
    (a bad value that matters still fails the decode, with a message of our own). Applied
    once per process, by the first decode.
    """
    global _configured
    if _configured:
        return
    with _configure_lock:
        if not _configured:
            pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
            _configured = True


def read_dataset(data: bytes, limits: DecodeLimits) -> Dataset:
    """pydicom's reading of `data`; a deflated data set is inflated here first, under a cap."""
    configure_pydicom()
    inflated = inflate_deflated_dataset(data, limits)
    if inflated is None:
        return pydicom.dcmread(io.BytesIO(data), force=True)
    dataset = pydicom.dcmread(io.BytesIO(inflated), force=True)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # as it was declared
    return dataset
