"""The ``class_folders`` layout: ``root/<class>/…`` or ``root/<split>/<class>/…``.

Split folders are train/val/test (and their aliases, :data:`~archives.splits.SPLIT_ALIASES`);
without them the splits are carved. Single-label; a class folder is one that holds an
image, and images outside every class folder are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

from archives.label_sets import ordered_label_space
from archives.records import OUTSIDE_CLASS_FOLDER, Archive, ArchiveError, Sample
from archives.scanning import relative_key, scan_images, subfolders
from archives.splits import SPLIT_ALIASES, Carver, group_of, with_carved_splits
from labels import Task

NAME = "class_folders"
LOOKS_FOR = "two or more class folders with images"
FILE_KIND = ""


def detect(root: Path) -> bool:
    return len({class_dir.name for _, class_dir in _class_dirs(root)}) >= 2


def _split_dirs(root: Path) -> list[tuple[str, Path]] | None:
    """(split, folder) when every subfolder of `root` is a split folder, else None."""
    folders = subfolders(root)
    if not folders or any(folder.name.lower() not in SPLIT_ALIASES for folder in folders):
        return None
    return [(SPLIT_ALIASES[folder.name.lower()], folder) for folder in folders]


def _class_dirs(root: Path) -> list[tuple[str, Path]]:
    """(split or "", class folder) for every class folder that holds an image."""
    split_dirs = _split_dirs(root)
    parents = split_dirs if split_dirs is not None else [("", root)]
    return [
        (split, folder)
        for split, parent in parents
        for folder in subfolders(parent)
        if next(scan_images(folder), None) is not None
    ]


def read(root: Path, carve: Carver) -> Archive:
    class_dirs = _class_dirs(root)
    classes = {folder.name for _, folder in class_dirs}
    if len(classes) < 2:
        raise ArchiveError(
            f"{root} is not in the class_folders layout: it needs two or more class folders "
            f"with images (root/<class>/… or root/<split>/<class>/…); found "
            f"{len(classes)}{': ' + ', '.join(sorted(classes)) if classes else ''}"
        )
    codes, names = ordered_label_space(classes)
    samples = [
        Sample(key=relative_key(path, root), labels=(folder.name,), split=split, path=path)
        for split, folder in class_dirs
        for path in scan_images(folder)
    ]
    in_class_dirs = {sample.path for sample in samples}
    outside = sum(1 for path in scan_images(root) if path not in in_class_dirs)
    skipped = {OUTSIDE_CLASS_FOLDER: outside} if outside else {}
    if _split_dirs(root) is None:
        assign = carve.train_val_test([group_of(sample) for sample in samples])
        samples = with_carved_splits(samples, assign, from_split="")
    return Archive(root, NAME, Task.SINGLE_LABEL, codes, names, tuple(samples), skipped)
