"""The ``image_folder`` layout: any folder of images without labels (what the indexer embeds).

Every sample is unlabelled, split ``""``. Detected only when nothing else matches; a folder
whose sub-folders hold images is detected as ``class_folders``, so the indexer names this
layout.
"""

from __future__ import annotations

from pathlib import Path

from archives.records import IMAGE_EXTENSIONS, Archive, ArchiveError, Sample
from archives.scanning import relative_key, scan_images
from archives.splits import Carver
from labels import Task

NAME = "image_folder"
LOOKS_FOR = f"any image file ({', '.join(sorted(IMAGE_EXTENSIONS))})"
FILE_KIND = ""


def detect(root: Path) -> bool:
    return next(scan_images(root), None) is not None


def read(root: Path, carve: Carver) -> Archive:
    del carve  # unlabelled: no splits
    samples = tuple(
        Sample(key=relative_key(path, root), labels=(), split="", path=path, labelled=False)
        for path in scan_images(root)
    )
    if not samples:
        raise ArchiveError(
            f"no image files in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return Archive(root, NAME, Task.SINGLE_LABEL, (), (), samples, {})
