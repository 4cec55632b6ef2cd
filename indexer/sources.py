"""What ``--source`` may name, and reading it: a folder or file of any dataset layout, or
a DICOMweb server (``dicomweb+http(s)://…``, :mod:`archives.pacs`).

A job the service started carries ``MEDRET_ARCHIVE_ROOTS`` (the folders it may read) and
``MEDRET_DICOMWEB_URL`` (the one PACS it may ask); :func:`check_source_allowed` checks the
source against them again in the process that reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

from archives.pacs import read_dicomweb_archive
from archives.records import Archive
from archives.registry import read_archive
from dicomweb.errors import DicomwebError
from dicomweb.refs import is_dicomweb, parse_source

ARCHIVE_ROOTS_VARIABLE = "MEDRET_ARCHIVE_ROOTS"
DICOMWEB_URL_VARIABLE = "MEDRET_DICOMWEB_URL"


class ArchiveSourceError(ValueError):
    """A source that does not exist, is not allowed here, or cannot be listed."""


def parse_source_argument(text: str) -> Path | str:
    """A DICOMweb source (checked, as its text) or a path; ``ArchiveSourceError`` if
    the one named does not exist or is not allowed (:func:`check_source_allowed`)."""
    if is_dicomweb(text):
        try:
            parse_source(text)
        except DicomwebError as exc:
            raise ArchiveSourceError(str(exc)) from None
        check_source_allowed(text)
        return text
    path = Path(text)
    if not path.exists():
        raise ArchiveSourceError(f"--source {text} does not exist")
    check_source_allowed(path)
    return path


def check_source_allowed(source: Path | str) -> None:
    """With ``MEDRET_ARCHIVE_ROOTS`` set, a folder must resolve inside one of those folders;
    with ``MEDRET_DICOMWEB_URL`` set too, a DICOMweb source must be on that server under
    its root. Files linked out of a folder are refused by ``archives.registry``."""
    raw = os.environ.get(ARCHIVE_ROOTS_VARIABLE, "")
    roots = [Path(part.strip()).expanduser().resolve() for part in raw.split(",") if part.strip()]
    if isinstance(source, str):
        if roots and not dicomweb_source_allowed(source, os.environ.get(DICOMWEB_URL_VARIABLE)):
            raise ArchiveSourceError(
                f"--source {parse_source(source).root} is not the PACS of {DICOMWEB_URL_VARIABLE}"
            )
        return
    if roots and not any(source.resolve().is_relative_to(root) for root in roots):
        raise ArchiveSourceError(
            f"--source {source} is outside the folders of {ARCHIVE_ROOTS_VARIABLE} "
            f"({', '.join(map(str, roots))})"
        )


def dicomweb_source_allowed(source: str, configured: str | None) -> bool:
    """Whether ``source`` is on the configured PACS (``MEDRET_DICOMWEB_URL``: an
    ``http(s)://`` URL, with or without the ``dicomweb+`` prefix), at its root or below."""
    if not configured:
        return False
    try:
        wanted = parse_source(configured if is_dicomweb(configured) else f"dicomweb+{configured}")
        given = parse_source(source)
    except DicomwebError:
        return False
    return given.root == wanted.root or given.root.startswith(f"{wanted.root}/")


def source_name(source: Path | str) -> str:
    """How messages name a source: a DICOMweb one by its root, its query keys left out."""
    if isinstance(source, str) and is_dicomweb(source):
        try:
            parsed = parse_source(source)
        except DicomwebError:
            return "the DICOMweb source"
        return parsed.root + ("?…" if parsed.query else "")
    return str(source)


def read_source(source: Path | str, layout: str, labels: Path | None) -> Archive:
    """The archive ``source`` names: a DICOMweb source or a folder/file of ``layout``."""
    if isinstance(source, str) and is_dicomweb(source):
        if layout not in ("auto", "dicomweb"):
            raise ArchiveSourceError(f"--layout {layout} does not apply to a DICOMweb source")
        try:
            return read_dicomweb_archive(source, labels)
        except DicomwebError as exc:
            raise ArchiveSourceError(f"cannot list {source_name(source)}: {exc}") from exc
    if labels is not None:
        raise ArchiveSourceError(
            "--labels applies to a DICOMweb source only; a folder's labels are in the folder"
        )
    return read_archive(Path(source), layout)
