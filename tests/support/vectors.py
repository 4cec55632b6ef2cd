"""Synthetic embeddings for the vector index tests: clustered unit vectors and SQL-like ids."""

from __future__ import annotations

import numpy as np

from indexer.vectors.factory import IndexSpec
from indexer.vectors.index import VectorIndex

DIM = 32
CHECKPOINT = "a1" * 32
BASE_ID = 10**12


def clustered_unit_vectors(n: int, dim: int, *, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (cosine to the centre ≈ 0.7).

    The centres depend on ``dim`` and ``clusters`` only, so data (seed 0) and queries (other
    seeds) come from the same clusters.
    """
    centres = np.random.default_rng(dim * 1000 + clusters).standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def case_ids(n: int, seed: int = 0) -> np.ndarray:
    """Large, non-contiguous, shuffled int64 ids like SQL keys of a big archive."""
    return BASE_ID + 7 * np.random.default_rng(seed).permutation(n).astype(np.int64)


def build(
    factory: str = "Flat", n: int = 2000, params: dict[str, int | float] | None = None
) -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    """An index of ``n`` clustered :data:`DIM`-d vectors, with the vectors and their ids."""
    vectors = clustered_unit_vectors(n, DIM)
    ids = case_ids(n)
    index = VectorIndex.build(
        vectors, ids, IndexSpec(factory, DIM, params or {}), checkpoint_sha256=CHECKPOINT
    )
    return index, vectors, ids


def brute_force(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` scores and ids in float64 (the reference every index is checked against)."""
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k found."""
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))
