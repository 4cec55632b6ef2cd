"""Finding image files in a folder tree, once, by extension.

Files are recognised by extension while scanning (:data:`~archives.records.IMAGE_EXTENSIONS`),
for speed; decoding (:func:`archives.content.load_pixels`) goes by content. Present files
are found by scanning the image folders once into a set of names, not by one ``stat`` per
label row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from archives.records import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

_SKIPPED_DIR_NAMES = frozenset({"__MACOSX"})


def is_skipped_name(name: str) -> bool:
    """Hidden files and folders, and the resource folders of macOS zip files."""
    return name.startswith(".") or name in _SKIPPED_DIR_NAMES


def scan_images(folder: Path) -> Iterator[Path]:
    """Image/DICOM files under `folder` (by extension), recursively, in sorted order.

    Hidden files and folders are skipped; symbolic links to folders are not followed.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        logger.warning("cannot list %s: %s", folder, exc)
        return
    for entry in entries:
        if is_skipped_name(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from scan_images(Path(entry.path))
        elif _extension(entry.name) in IMAGE_EXTENSIONS and entry.is_file():
            yield Path(entry.path)


def _extension(name: str) -> str:
    """``.png`` for ``a.PNG`` (what Path.suffix gives, lower-cased, without a Path)."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def subfolders(folder: Path) -> list[Path]:
    """The folder's subfolders that are not skipped, sorted."""
    return sorted(
        child for child in folder.iterdir() if child.is_dir() and not is_skipped_name(child.name)
    )


def relative_key(path: Path, root: Path) -> str:
    """A sample key: the file's path below the archive root, with forward slashes."""
    return path.relative_to(root).as_posix()
