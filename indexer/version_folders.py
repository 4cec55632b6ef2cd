"""Where index versions live on disk, and how a version folder comes into place.

``<data-dir>/indexes/<collection>/v<NNNN>-<job>/`` holds one version: ``index.faiss``,
``index.json``, ``scores.json`` (when centred or calibrated), ``vectors.npy`` and
``ids.npy``. A build writes them into ``v<NNNN>-<job>.tmp-<job>/`` (each file atomically)
and renames the folder into place: the rename is the commit point, and the parent folder
is fsynced so it survives a power cut.
Folders matching :data:`LEFTOVER_PATTERN` are builds that never finished.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from files.atomic import fsync_directory
from indexer.vectors.index import VectorIndex
from indexer.vectors.persistence import save_vectors

LEFTOVER_PATTERN = "v*.tmp-*"


def collection_folder(data_dir: Path, collection: str) -> Path:
    """The folder of a collection's versions."""
    return data_dir / "indexes" / collection


def version_folder(base: Path, number: int, job_id: str) -> Path:
    """The folder of version ``number``, made by job ``job_id``."""
    return base / f"v{number:04d}-{job_id[:8]}"


def write_staging_folder(
    folder: Path, job_id: str, index: VectorIndex, vectors: np.ndarray, ids: np.ndarray
) -> Path:
    """A fresh ``<folder>.tmp-<job>`` holding the index, its sidecar and the raw vectors."""
    tmp = folder.with_name(f"{folder.name}.tmp-{job_id[:8]}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    index.save(tmp)
    save_vectors(tmp, vectors, ids)
    return tmp


def move_into_place(staging: Path, folder: Path) -> None:
    """Rename the staging folder to ``folder`` (a folder, not a file) and fsync the parent."""
    staging.rename(folder)
    fsync_directory(folder.parent)


def remove_leftovers(folder: Path) -> None:
    """Delete the staging folders of builds that never finished."""
    if folder.is_dir():
        for leftover in folder.glob(LEFTOVER_PATTERN):
            shutil.rmtree(leftover, ignore_errors=True)
