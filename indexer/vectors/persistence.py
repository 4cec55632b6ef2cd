"""Files of an index version: ``index.faiss`` + ``scores.json`` + ``index.json``, and
``vectors.npy`` + ``ids.npy``.

Every file is written through :func:`files.atomic.atomic_paths` (temporary name in the same
folder, fsync, rename, folder fsync, clean-up on failure). The index file is moved into
place before the sidecar that names its size and SHA-256, so a crash between the two moves
leaves a pair that :func:`read_index_file` refuses rather than a silently wrong one;
``scores.json`` (the centre and the match-probability table) is checked the same way by
:func:`read_scores`. The raw vectors (the model's unit embeddings, *not* centred) are kept
next to an index so that a new version (another factory, without removed ids on an HNSW
index, or with a new centre) can be built without embedding the images again, and because
the match probability reads the raw cosine (:mod:`indexer.vectors.stored`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from files.atomic import atomic_paths
from indexer.vectors.anatomy import has_native_ids
from indexer.vectors.arrays import FloatArray, IdArray, as_ids
from indexer.vectors.errors import VectorIndexError
from indexer.vectors.sidecar import SIDECAR_FILE, sidecar_json

INDEX_FILE = "index.faiss"
SCORES_FILE = "scores.json"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.npy"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def save_index(
    folder: Path, index: Any, sidecar: Mapping[str, Any], scores: Mapping[str, Any]
) -> None:
    """Write CPU ``index`` to ``folder/index.faiss``, ``scores`` to ``folder/scores.json`` and
    ``sidecar`` (+ both files' sizes and hashes and the time of saving) to
    ``folder/index.json``, atomically, the sidecar last."""
    folder = Path(folder)
    targets = (folder / INDEX_FILE, folder / SCORES_FILE, folder / SIDECAR_FILE)
    with atomic_paths(*targets) as (index_tmp, scores_tmp, sidecar_tmp):
        faiss.write_index(index, str(index_tmp))
        scores_tmp.write_text(sidecar_json(scores), encoding="utf-8")
        record = {
            **sidecar,
            "index_file": INDEX_FILE,
            "index_bytes": index_tmp.stat().st_size,
            "index_sha256": file_sha256(index_tmp),
            "scores_file": SCORES_FILE,
            "scores_bytes": scores_tmp.stat().st_size,
            "scores_sha256": file_sha256(scores_tmp),
            "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        sidecar_tmp.write_text(sidecar_json(record), encoding="utf-8")


def checked_file(path: Path, sidecar: Mapping[str, Any], kind: str) -> Path:
    """``path``, refused when missing or when its size or SHA-256 differs from the
    sidecar's ``<kind>_bytes`` / ``<kind>_sha256``."""
    if not path.is_file():
        raise VectorIndexError(f"{path} is missing (the sidecar {SIDECAR_FILE} names it)")
    size = path.stat().st_size
    recorded = sidecar[f"{kind}_bytes"]
    if size != recorded or file_sha256(path) != sidecar[f"{kind}_sha256"]:
        raise VectorIndexError(
            f"{path} is corrupt or does not belong to its sidecar: its size ({size} bytes) or "
            f"SHA-256 differs from the recorded ({recorded} bytes)"
        )
    return path


def read_scores(folder: Path, sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """``scores.json`` checked against the sidecar's size and SHA-256 (``{}`` for a
    format-1 folder, which has none: no centre, no match-probability table)."""
    if "scores_sha256" not in sidecar:
        return {}
    path = checked_file(Path(folder) / SCORES_FILE, sidecar, "scores")
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VectorIndexError(f"{path} is not readable JSON: {err}") from err
    if not isinstance(scores, dict):
        raise VectorIndexError(f"{path} is not a JSON object")
    return scores


def read_index_file(folder: Path, sidecar: Mapping[str, Any]) -> Any:
    """Read ``index.faiss``, checking size, hash, dimension, count and metric vs the sidecar."""
    path = checked_file(folder / INDEX_FILE, sidecar, "index")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise VectorIndexError(f"FAISS cannot read {path}: {err}") from err
    checks = {
        "dimension": (index.d, int(sidecar["dim"])),
        "vector count": (index.ntotal, int(sidecar["vector_count"])),
        "metric": (index.metric_type, faiss.METRIC_INNER_PRODUCT),
    }
    for what, (found, recorded) in checks.items():
        if found != recorded:
            raise VectorIndexError(
                f"{path}: {what} {found} does not match the sidecar's {recorded}"
            )
    if not has_native_ids(index):
        raise VectorIndexError(f"{path} holds an index without ids (not written by this code)")
    return index


def save_vectors(folder: Path, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
    """Store raw float32 embeddings and their ids as ``vectors.npy`` + ``ids.npy``, atomically.

    Kept next to an index so that a new version (another factory, or without removed ids on
    an HNSW index) can be built without embedding the images again.
    """
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    id_arr = as_ids(ids)
    if vecs.ndim != 2 or len(vecs) != len(id_arr):
        raise VectorIndexError(
            f"vectors {vecs.shape} and ids {id_arr.shape} must be (n, dim) and (n,)"
        )
    folder = Path(folder)
    with atomic_paths(folder / VECTORS_FILE, folder / IDS_FILE) as (vectors_tmp, ids_tmp):
        _write_npy(vectors_tmp, vecs)
        _write_npy(ids_tmp, id_arr)


def _write_npy(path: Path, array: npt.NDArray[Any]) -> None:
    with path.open("wb") as f:  # a file object: np.save would add ".npy" to a name
        np.save(f, array, allow_pickle=False)


def load_vectors(folder: Path, *, mmap: bool = False) -> tuple[FloatArray, IdArray]:
    """The ``(vectors, ids)`` stored by :func:`save_vectors` (memory-mapped if ``mmap``)."""
    folder = Path(folder)
    arrays = []
    for name in (VECTORS_FILE, IDS_FILE):
        path = folder / name
        if not path.is_file():
            raise VectorIndexError(f"stored vectors are missing: {path} does not exist")
        try:
            arrays.append(np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False))
        except (OSError, ValueError) as err:
            raise VectorIndexError(f"{path} is not a readable .npy file: {err}") from err
    vectors, ids = arrays
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise VectorIndexError(f"{folder / VECTORS_FILE} is {vectors.dtype} {vectors.shape}")
    if ids.ndim != 1 or ids.dtype != np.int64 or len(ids) != len(vectors):
        raise VectorIndexError(
            f"{folder / IDS_FILE} ({ids.dtype} {ids.shape}) does not match "
            f"{len(vectors)} stored vectors"
        )
    return vectors, ids
