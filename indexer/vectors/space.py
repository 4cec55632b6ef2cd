"""The space an index searches: unit embeddings, optionally centred on a stored mean.

A fine-tuned network puts its unit embeddings in a narrow cone (the gallery mean of the
HAM10000 model has norm 0.94), so every cosine reads about 0.99. Subtracting the mean of
the version's embeddings and renormalising (:func:`centred`) spreads them over the sphere
without changing what is near what by much; the mean (the *centre*) is stored with the
version, and every vector and query of that version goes through the same map, so a
score is still a cosine of unit vectors — in the centred space.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from indexer.vectors.arrays import FloatArray
from indexer.vectors.errors import VectorIndexError

AT_CENTRE = 1e-6
"""A centred vector shorter than this has no direction; it keeps its uncentred one."""


def centre_of(vectors: npt.ArrayLike) -> FloatArray | None:
    """The mean of unit ``vectors`` (n, dim) as float32; None for fewer than two vectors
    (there is nothing to centre)."""
    arr = np.asarray(vectors, dtype=np.float64)
    if arr.ndim != 2:
        raise VectorIndexError(f"vectors must be (n, dim), got shape {arr.shape}")
    if len(arr) < 2:
        return None
    return np.ascontiguousarray(arr.mean(axis=0), dtype=np.float32)


def checked_centre(centre: npt.ArrayLike | None, dim: int) -> FloatArray | None:
    """``centre`` as a finite float32 (dim,) vector, or None."""
    if centre is None:
        return None
    arr = np.ascontiguousarray(centre, dtype=np.float32)
    if arr.shape != (dim,) or not np.isfinite(arr).all():
        raise VectorIndexError(f"a centre must be {dim} finite numbers, got shape {arr.shape}")
    return arr


def centred(vectors: FloatArray, centre: FloatArray | None) -> FloatArray:
    """Unit rows ``vectors`` moved by ``-centre`` and renormalised (unchanged without a
    centre). A row that sits on the centre keeps its own direction (:data:`AT_CENTRE`)."""
    if centre is None or len(vectors) == 0:
        return vectors
    moved = vectors.astype(np.float64) - centre.astype(np.float64)
    norms = np.linalg.norm(moved, axis=1, keepdims=True)
    at_centre = norms[:, 0] < AT_CENTRE
    if at_centre.any():
        moved[at_centre] = vectors[at_centre]
        norms[at_centre] = np.linalg.norm(vectors[at_centre], axis=1, keepdims=True)
    return np.ascontiguousarray(moved / norms, dtype=np.float32)
