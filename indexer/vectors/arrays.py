"""The arrays a vector index takes and gives: their types, checks on input, result shapes.

Vectors are C-contiguous float32 rows of unit length; ids are non-negative int64 (``-1`` is
FAISS's "no hit"). Results are ``(Q, k)`` pairs of float32 scores and int64 ids, padded with
``-inf`` / ``-1`` where there are fewer than ``k`` hits.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt

from indexer.vectors.errors import VectorIndexError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]

NORM_TOLERANCE = 1e-3
"""Largest | ‖v‖ − 1 | accepted as already normalised."""


def as_ids(ids: npt.ArrayLike, what: str = "ids") -> IdArray:
    """``ids`` as a 1-D int64 array of non-negative values (else :class:`VectorIndexError`)."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise VectorIndexError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise VectorIndexError(f"{what} must be integers, got {arr.dtype}")
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise VectorIndexError(f"{what} exceed the int64 range")
    out = np.ascontiguousarray(arr, dtype=np.int64)
    if int(out.min()) < 0:
        raise VectorIndexError(f"{what} must be non-negative (FAISS uses -1 for 'no hit')")
    return out


def as_unit_vectors(vectors: npt.ArrayLike, dim: int, what: str) -> FloatArray:
    """``vectors`` as C-contiguous float32 (n, dim) rows of norm 1.

    Refuses non-finite values and zero rows; re-normalises rows whose norm is off by more than
    :data:`NORM_TOLERANCE`, logging a warning for ``what == "vectors"`` (queries: debug).
    """
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise VectorIndexError(f"{what} must be a 2-D array (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise VectorIndexError(
            f"dimension mismatch: {what} have {arr.shape[1]} dimensions, the index has {dim}"
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise VectorIndexError(f"{what} must be real numbers, got {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if out.shape[0] == 0:
        return out
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out).all(axis=1)).sum())
        raise VectorIndexError(f"{bad} of {len(out)} {what} contain NaN or infinity")
    norms = np.linalg.norm(out, axis=1)
    if (norms == 0).any():
        raise VectorIndexError(f"{int((norms == 0).sum())} {what} are all zeros")
    off = np.abs(norms - 1) > NORM_TOLERANCE
    if off.any():
        log = logger.warning if what == "vectors" else logger.debug
        log(
            "%d of %d %s are not unit length (norms %.4g–%.4g); normalising them",
            int(off.sum()),
            len(out),
            what,
            float(norms.min()),
            float(norms.max()),
        )
        out = out.copy() if out is arr else out
        out[off] /= norms[off, None]
    return out


def isin_sorted(values: npt.NDArray[np.int64], sorted_unique: IdArray) -> npt.NDArray[np.bool_]:
    """Elementwise ``values ∈ sorted_unique`` (any shape), by binary search."""
    if sorted_unique.size == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.searchsorted(sorted_unique, values).clip(0, sorted_unique.size - 1)
    return np.asarray(sorted_unique[pos] == values)


def empty_result(nq: int, k: int) -> tuple[FloatArray, IdArray]:
    """``(nq, k)`` results without a hit: scores ``-inf``, ids ``-1``."""
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def finalised(scores: npt.ArrayLike, ids: npt.ArrayLike, *, k: int) -> tuple[FloatArray, IdArray]:
    """(Q, k) float32 scores and int64 ids: padded, FAISS's ``-FLT_MAX`` misses as ``-inf``."""
    found_ids = np.asarray(ids, dtype=np.int64)
    out_scores, out_ids = empty_result(len(found_ids), k)
    width = found_ids.shape[1]
    out_ids[:, :width] = found_ids
    out_scores[:, :width] = np.where(found_ids >= 0, scores, -np.inf)
    return out_scores, out_ids
