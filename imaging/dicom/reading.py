"""Bytes → a pydicom data set, in two steps: open (walk the header, nothing allocated for
the pixels) and read; and the pydicom settings that reading relies on.

:func:`open_dataset` finds the data set after the preamble and file meta with pydicom's
own readers, and walks its elements (:mod:`imaging.dicom.outline`) — inflating only the
header of a deflated data set (:mod:`imaging.dicom.deflate`) — so the caller knows the
image's size, and sequence floods are refused, before pydicom parses anything.
:meth:`OpenedDataset.read` is then ``pydicom.dcmread(force=True)`` on the in-memory bytes
(a deflated data set inflated under the cap its header sets), so Part 10 files and
preamble-less/meta-less streams are both read; nothing touches the disk.

pydicom keeps its settings process-wide. :func:`configure_pydicom` applies ours; it is
called where reading starts (:func:`open_dataset`), never at import, so importing this
package changes nothing in pydicom.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import (  # pydicom's own readers, so we agree on the layout
    _read_command_set_elements,
    _read_file_meta_info,
    read_preamble,
)
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from imaging.dicom.deflate import DeflatedDataset, open_deflated
from imaging.dicom.outline import Outline, outline_dataset
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


@dataclass
class OpenedDataset:
    """A DICOM object whose header has been walked and whose pixels are not yet read."""

    data: bytes
    outline: Outline
    deflated: DeflatedDataset | None

    def read(self) -> Dataset:
        """pydicom's reading of the object (a deflated data set inflated under its cap)."""
        if self.deflated is None:
            return pydicom.dcmread(io.BytesIO(self.data), force=True)
        dataset = pydicom.dcmread(io.BytesIO(self.deflated.inflated()), force=True)
        dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # as declared
        return dataset


def open_dataset(data: bytes, limits: DecodeLimits) -> OpenedDataset:
    """Locate the data set in `data` and walk its header (see the module text)."""
    configure_pydicom()
    stream = io.BytesIO(data)  # shares `data`'s buffer, no copy
    read_preamble(stream, True)
    file_meta = _read_file_meta_info(stream)
    meta_end = stream.tell()
    _read_command_set_elements(stream)
    body_start = stream.tell()
    syntax = file_meta.get("TransferSyntaxUID")
    if syntax == DeflatedExplicitVRLittleEndian and body_start < len(data):
        deflated = open_deflated(data, file_meta, meta_end, body_start, limits)
        return OpenedDataset(data, deflated.outline, deflated)
    implicit, little = _encoding(data, body_start, file_meta)
    body = memoryview(data)[body_start:]
    outline = outline_dataset(body, implicit=implicit, little_endian=little, limits=limits)
    return OpenedDataset(data, outline, None)


def read_dataset(data: bytes, limits: DecodeLimits) -> Dataset:
    """pydicom's reading of `data`, after the header walk (no decode budget is taken)."""
    return open_dataset(data, limits).read()


def _encoding(data: bytes, body_start: int, file_meta: FileMetaDataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the data set: as declared, else as it looks."""
    syntax = file_meta.get("TransferSyntaxUID")
    if syntax == ImplicitVRLittleEndian:
        return True, True
    if syntax == ExplicitVRBigEndian:
        return False, False
    if syntax:
        return False, True
    vr = data[body_start + 4 : body_start + 6]
    return not (len(vr) == 2 and vr.isalpha() and vr.isupper()), True
