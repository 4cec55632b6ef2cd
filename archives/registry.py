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
from archives.records import Archive, ArchiveError
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
    archive = reader.read(root, Carver(val_fraction=val_fraction, seed=seed))
    if not archive.samples:
        skipped = "; ".join(f"{reason}: {count:,}" for reason, count in archive.skipped.items())
        raise ArchiveError(
            f"{root} ({layout} layout) holds no usable samples"
            + (f" (skipped {skipped})" if skipped else "")
        )
    warn_on_groups_in_several_splits(archive)
    logger.info("%s", archive.summary())
    return archive


def _layout_named(name: str) -> Layout:
    for layout in REGISTRY:
        if name == layout.NAME:
            return layout
    raise ArchiveError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUTS)}")
