"""The ``medmnist`` layout: a MedMNIST v2 ``.npz`` (``train_images``, ``train_labels``,
``val_*``, ``test_*``), given as the file or as the folder that holds it.

The samples point into the arrays (:class:`~archives.records.ArrayRef`) instead of at
files. One label column is single-label; several binary columns are multi-label. The
splits are always the file's own.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archives.records import SPLITS, Archive, ArchiveError, ArrayRef, Sample
from archives.scanning import is_skipped_name
from archives.splits import Carver
from labels import Task

NAME = "medmnist"
LOOKS_FOR = "a .npz file"
FILE_KIND = "a MedMNIST .npz file"

# Known MedMNIST label spaces, by a name the file name contains: codes and readable names.
_KNOWN_LABELS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pneumoniamnist": (("normal", "pneumonia"), ("Normal", "Pneumonia")),
}


def detect(root: Path) -> bool:
    if root.is_file():
        return root.suffix.lower() == ".npz"
    return bool(_npz_files(root))


def _npz_files(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.glob("*.npz") if path.is_file() and not is_skipped_name(path.name)
    )


def read(root: Path, carve: Carver) -> Archive:
    del carve  # MedMNIST always gives its splits
    npz_path = root if root.is_file() else _single_npz(root)
    headers = _npz_array_headers(npz_path)
    splits = [split for split in SPLITS if f"{split}_images" in headers]
    if not splits:
        raise ArchiveError(
            f"{npz_path} is not in the MedMNIST layout: it needs train_images/train_labels "
            f"(and val_*, test_*) arrays; it holds {', '.join(sorted(headers)) or 'none'}"
        )
    with np.load(npz_path, allow_pickle=False) as npz:
        labels = {split: _split_labels(npz, split, headers, npz_path) for split in splits}
    columns = {array.shape[1] for array in labels.values()}
    if len(columns) != 1:
        raise ArchiveError(f"{npz_path}: the label arrays disagree on their number of columns")
    (column_count,) = columns
    task = Task.MULTI_LABEL if column_count > 1 else Task.SINGLE_LABEL
    if task is Task.MULTI_LABEL:
        class_count = column_count
        for split, array in labels.items():
            if not np.isin(array, (0, 1)).all():
                raise ArchiveError(
                    f"{npz_path}: {split}_labels has {column_count} columns but values other "
                    "than 0 and 1 (multi-label arrays must be multi-hot)"
                )
    else:
        class_count = 1 + max(int(array.max(initial=0)) for array in labels.values())
    codes, names = _label_space(npz_path, class_count)
    samples: list[Sample] = []
    for split in splits:
        for index, row in enumerate(labels[split].tolist()):
            if task is Task.MULTI_LABEL:
                sample_labels = tuple(code for code, value in zip(codes, row, strict=True) if value)
            else:
                sample_labels = (codes[row[0]],)
            samples.append(
                Sample(
                    key=f"{split}/{index}",
                    labels=sample_labels,
                    split=split,
                    array=ArrayRef(npz_path, f"{split}_images", index),
                )
            )
    return Archive(root, NAME, task, codes, names, tuple(samples), {})


def _single_npz(folder: Path) -> Path:
    files = _npz_files(folder)
    if not files:
        raise ArchiveError(f"no .npz file in {folder}: the medmnist layout needs one")
    if len(files) > 1:
        raise ArchiveError(
            f"{folder} holds several .npz files ({', '.join(p.name for p in files)}); "
            "give the path of the one to read"
        )
    return files[0]


@dataclass(frozen=True)
class _ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]


def _npz_array_headers(path: Path) -> dict[str, _ArrayHeader]:
    """Shape and dtype of every array in an npz, from the headers (no array is loaded)."""
    headers: dict[str, _ArrayHeader] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                headers[info.filename.removesuffix(".npy")] = _ArrayHeader(tuple(shape), dtype)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ArchiveError(f"{path} is not a readable .npz file: {exc}") from exc
    return headers


def _split_labels(
    npz: Mapping[str, np.ndarray], split: str, headers: Mapping[str, _ArrayHeader], path: Path
) -> np.ndarray:
    """The split's labels as int64 (N, C), after checking them against its images."""
    images = headers[f"{split}_images"]
    if f"{split}_labels" not in headers:
        raise ArchiveError(f"{path} has {split}_images but no {split}_labels")
    if images.dtype != np.uint8 or not (
        len(images.shape) == 3 or (len(images.shape) == 4 and images.shape[3] in (1, 3))
    ):
        raise ArchiveError(
            f"{path}: {split}_images is {images.dtype} {images.shape}; expected uint8 "
            "(N, H, W) or (N, H, W, 1|3) (3-D volumes are not supported)"
        )
    labels = np.asarray(npz[f"{split}_labels"])
    if labels.ndim == 1:
        labels = labels[:, np.newaxis]
    if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
        raise ArchiveError(
            f"{path}: {split}_labels has shape {labels.shape} for {images.shape[0]} images"
        )
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ArchiveError(f"{path}: {split}_labels must hold non-negative integers")
    return labels.astype(np.int64)


def _label_space(path: Path, class_count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    for name, (codes, names) in _KNOWN_LABELS.items():
        if name in path.name.lower() and len(codes) >= class_count:
            return codes, names
    codes = tuple(str(i) for i in range(class_count))
    return codes, codes
