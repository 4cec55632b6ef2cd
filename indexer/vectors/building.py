"""The steps of a build: an empty index for a spec, training on a sample, adding with ids.

Indexes that need training are trained on a seeded sample of ``train_sample`` vectors,
raised to FAISS's recommended 39 points per centroid when the archive has that many. An
archive smaller than that minimum (or empty) gets an exact ``Flat`` index instead; the
reason is logged and recorded in the sidecar (``fallback_reason``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import faiss
import numpy as np

from indexer.vectors import anatomy
from indexer.vectors.anatomy import MIN_POINTS_PER_CENTROID
from indexer.vectors.arrays import FloatArray, IdArray
from indexer.vectors.errors import VectorIndexError
from indexer.vectors.factory import IndexSpec
from indexer.vectors.gpu import train_on_gpu_if_possible
from indexer.vectors.parameters import default_search_params

logger = logging.getLogger(__name__)

HNSW_EF_CONSTRUCTION = 200
"""efConstruction of every HNSW graph (FAISS's 40 is too sparse, see :func:`new_index`)."""
ADD_BATCH = 100_000
"""Vectors per ``add_with_ids`` call during a build (progress is logged between batches)."""


def new_index(spec: IndexSpec, n: int) -> tuple[Any, IndexSpec, str | None]:
    """An empty CPU index for ``spec``, the spec actually used, and why it differs (or None).

    The spec actually used adds :func:`default_search_params` for parameters ``spec`` omits.
    """
    factory = spec.factory.strip()
    try:
        index = faiss.index_factory(spec.dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise VectorIndexError(f"unknown or invalid index factory {spec.factory!r}") from err
    need = anatomy.min_training_points(index)
    if need and n < need:
        reason = (
            f"{n} vectors are fewer than the {need} that training {spec.factory!r} needs "
            f"({MIN_POINTS_PER_CENTROID} per centroid); built an exact Flat index instead"
        )
        logger.warning("%s", reason)
        flat = faiss.index_factory(spec.dim, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
        return flat, IndexSpec("Flat", spec.dim, {}), reason
    if not anatomy.has_native_ids(index):
        index = faiss.index_factory(spec.dim, f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)
    core = anatomy.core(index)
    if hasattr(core, "hnsw"):
        # FAISS's default efConstruction (40) builds a graph too sparse for recall@10 ≥ 0.95
        # on a million clustered vectors at any affordable efSearch (bench/index_speed_search)
        core.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    params = {**default_search_params(index), **spec.search_params}
    return index, replace(spec, search_params=params), None


def train(index: Any, vectors: FloatArray, train_sample: int, seed: int, *, gpu: bool) -> int:
    """Train ``index`` on a seeded sample; returns the sample size."""
    n = len(vectors)
    size = min(n, max(train_sample, anatomy.min_training_points(index)))
    if size > train_sample:
        logger.info("training sample raised from %d to %d (39 per centroid)", train_sample, size)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
    sample = np.ascontiguousarray(vectors[rows])
    ivf = anatomy.ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed
    logger.info("training on %d of %d vectors", size, n)
    try:
        if not (gpu and train_on_gpu_if_possible(index, sample)):
            index.train(sample)
    except RuntimeError as err:
        raise VectorIndexError(f"training the index failed: {err}") from err
    return size


def add_in_batches(index: Any, vectors: FloatArray, ids: IdArray) -> None:
    """``add_with_ids`` in batches of :data:`ADD_BATCH`, logging progress on large adds."""
    for start in range(0, len(vectors), ADD_BATCH):
        stop = min(start + ADD_BATCH, len(vectors))
        index.add_with_ids(vectors[start:stop], ids[start:stop])
        if len(vectors) > ADD_BATCH:
            logger.info("added %d/%d vectors", stop, len(vectors))
