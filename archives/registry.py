"""The dataset layouts in detection order, and the two entry points that walk them.

A folder on disk → an :class:`~archives.records.Archive` of
:class:`~archives.records.Sample`: :func:`read_archive` reads a folder in a named layout,
or in the first layout of :data:`REGISTRY` whose ``detect`` accepts it
(:func:`detect_layout`). Both ``training/`` (datasets, splits, targets) and ``indexer/``
(what to embed) read archives this way.

To add a layout, write one module in :mod:`archives.layouts` (its ``NAME``, ``LOOKS_FOR``,
``FILE_KIND``, ``detect`` and ``read``) and add it to :data:`REGISTRY` where it should be
tried: :data:`LAYOUTS`, detection, reading and the message when nothing matches follow.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Protocol

from archives.layouts import (
    chestxray14,
    class_folders,
    image_folder,
    isic2018,
    manifest,
    medmnist,
)
from archives.records import OUTSIDE_ROOT, Archive, ArchiveError, Sample
from archives.splits import Carver, warn_on_groups_in_several_splits

logger = logging.getLogger(__name__)


class Layout(Protocol):
    """What a module of :mod:`archives.layouts` exports."""

    NAME: str  # what --layout and Archive.layout call it
    LOOKS_FOR: str  # what detect looks for, in words (for the message when nothing matches)
    FILE_KIND: str  # the single file it reads instead of a folder, in words; "" if none

    def detect(self, root: Path) -> bool: ...

    def read(self, root: Path, carve: Carver) -> Archive: ...


# The order in which detect_layout tries them: the first that matches wins.
REGISTRY: tuple[Layout, ...] = (
    isic2018,
    chestxray14,
    manifest,
    medmnist,
    class_folders,
    image_folder,
)
LAYOUTS: tuple[str, ...] = tuple(layout.NAME for layout in REGISTRY)


def detect_layout(root: Path) -> str:
    """Name the layout of `root` (one of :data:`LAYOUTS`), trying them in a fixed order."""
    root = Path(root)
    if not root.exists():
        raise ArchiveError(f"{root} does not exist")
    is_file = root.is_file()
    for layout in REGISTRY:
        if (layout.FILE_KIND or not is_file) and layout.detect(root):
            return layout.NAME
    if is_file:
        kinds = " or ".join(layout.FILE_KIND for layout in REGISTRY if layout.FILE_KIND)
        raise ArchiveError(f"{root} is a file; give a dataset folder or {kinds}")
    looked_for = [f"{layout.LOOKS_FOR} ({layout.NAME})" for layout in REGISTRY]
    raise ArchiveError(
        f"{root} matches no dataset layout: looked for {', '.join(looked_for[:-1])} and "
        f"{looked_for[-1]}; found none"
    )


def read_archive(
    root: str | Path,
    layout: str = "auto",
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Archive:
    """Read the dataset at `root` in `layout` (``"auto"``: :func:`detect_layout`).

    `val_fraction` and `seed` apply only where the archive gives no validation split and
    one is carved off by group (see :mod:`archives.splits`).
    """
    root = Path(root)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not root.exists():
        raise ArchiveError(f"{root} does not exist")
    if layout == "auto":
        layout = detect_layout(root)
        logger.info("%s: detected the %s layout", root, layout)
    reader = _layout_named(layout)
    if root.is_file() and not reader.FILE_KIND:
        raise ArchiveError(f"{root} is a file; the {layout} layout needs a folder")
    archive = confined(reader.read(root, Carver(val_fraction=val_fraction, seed=seed)))
    if not archive.samples:
        skipped = "; ".join(f"{reason}: {count:,}" for reason, count in archive.skipped.items())
        raise ArchiveError(
            f"{root} ({layout} layout) holds no usable samples"
            + (f" (skipped {skipped})" if skipped else "")
        )
    warn_on_groups_in_several_splits(archive)
    logger.info("%s", archive.summary())
    return archive


def confined(archive: Archive) -> Archive:
    """`archive` without the samples whose file resolves outside the archive's folder (a
    symbolic link out of it, or a folder link on the way), counted as skipped
    (:data:`~archives.records.OUTSIDE_ROOT`). Links that stay inside are fine.

    Every layout's samples pass here, so nothing outside the folder an operator named (and
    :envvar:`MEDRET_ARCHIVE_ROOTS` allowed) is ever indexed and then served.
    """
    root = Path(archive.root).resolve()
    folder = root.parent if root.is_file() else root  # a manifest or .npz file: its folder
    real_dirs: dict[Path, Path] = {}  # one resolve per folder, not per file

    def inside(path: Path) -> bool:
        real_dir = real_dirs.get(path.parent)
        if real_dir is None:
            real_dir = real_dirs[path.parent] = path.parent.resolve()
        real = path.resolve() if path.is_symlink() else real_dir / path.name
        return real.is_relative_to(folder)

    kept = [
        sample for sample in archive.samples if all(inside(path) for path in _sample_files(sample))
    ]
    outside = len(archive.samples) - len(kept)
    if not outside:
        return archive
    logger.warning(
        "%s: %d file(s) resolve outside the archive folder (symbolic links out of it); not read",
        archive.root,
        outside,
    )
    skipped = {**archive.skipped, OUTSIDE_ROOT: archive.skipped.get(OUTSIDE_ROOT, 0) + outside}
    return dataclasses.replace(archive, samples=tuple(kept), skipped=skipped)


def _sample_files(sample: Sample) -> list[Path]:
    return [p for p in (sample.path, sample.array.file if sample.array else None) if p]


def _layout_named(name: str) -> Layout:
    for layout in REGISTRY:
        if name == layout.NAME:
            return layout
    raise ArchiveError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUTS)}")
