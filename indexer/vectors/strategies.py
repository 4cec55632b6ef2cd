"""Filtered search: the top-``k`` among a set of allowed ids, one strategy per kind of index.

* **Flat** (CPU): an ``IDSelectorBatch`` inside FAISS; exact.
* **HNSW** (:func:`search_graph_filtered`): a graph search sees about ``efSearch`` allowed
  nodes only if it explores ``efSearch / f`` nodes, f being the allowed fraction, so
  efSearch is raised to ``⌈max(efSearch, k) / f⌉``. Each explored node costs about ``2M``
  distance evaluations, so when the allowed set is no larger than that (``allowed ≤ 2M ·
  ef'``, i.e. ≤ √(2M·efSearch·n) — ~90k of 1M for M = 32, efSearch = 128) the allowed
  vectors are scored exactly instead (``reconstruct`` through the IDMap). Queries a selector
  search leaves with fewer than ``min(k, allowed)`` hits are scored exactly.
* **IVF** (:func:`search_ivf_filtered`): the selector inside FAISS with ``nprobe`` raised to
  ``⌈nprobe / f⌉`` (at most all lists): a filtered scan computes distances for allowed ids
  only, so this sees as many allowed candidates as an unfiltered search sees candidates, for
  about the same distance work (plus cheap membership tests). Queries still left with fewer
  than ``min(k, allowed)`` hits are searched again with ``nprobe`` doubled, up to all lists
  (then complete).
* **GPU indexes and anything else without selector support**: over-fetching, see
  :func:`search_by_overfetch`; queries still short at FAISS's GPU k limit are answered on
  the CPU index with the selector strategy above (:func:`search_gpu_filtered`).

``allowed`` is always sorted, unique, and holds only ids that are in the index.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from indexer.vectors import anatomy, gpu
from indexer.vectors.arrays import FloatArray, IdArray, empty_result, isin_sorted
from indexer.vectors.ids import IdMapping
from indexer.vectors.parameters import selector_params

logger = logging.getLogger(__name__)

SearchFn = Callable[[FloatArray, int], tuple[FloatArray, IdArray]]

OVERFETCH_GROWTH = 4
EXACT_CHUNK_ELEMENTS = 16_000_000
"""Query × vector scores computed at once by the exact subset search (64 MB of float32)."""


def search_filtered_cpu(
    ids: IdMapping, kind: anatomy.IndexKind, factory: str, q: FloatArray, k: int, allowed: IdArray
) -> tuple[FloatArray, IdArray]:
    """Filtered search on the CPU index ``ids.index``, by the strategy for its ``kind``."""
    if kind == "graph":
        return search_graph_filtered(ids, q, k, allowed)
    if kind == "ivf":
        return search_ivf_filtered(ids, q, k, allowed)
    try:
        return search_with_selector(ids, q, k, allowed)
    except RuntimeError as err:  # e.g. an index type whose search ignores or refuses sel
        logger.debug("no ID selector for %s (%s); over-fetching", factory, err)
    scores, found, _ = search_by_overfetch(
        ids.search, q, k, allowed, ntotal=int(ids.index.ntotal), max_fetch=int(ids.index.ntotal)
    )
    return scores, found


def search_graph_filtered(
    ids: IdMapping, q: FloatArray, k: int, allowed: IdArray
) -> tuple[FloatArray, IdArray]:
    """HNSW: exact scoring of a small allowed set, else the selector with a raised efSearch."""
    ntotal = int(ids.index.ntotal)
    want = min(k, allowed.size)
    hnsw = anatomy.core(ids.index).hnsw
    fraction = allowed.size / ntotal
    ef = min(ntotal, math.ceil(max(hnsw.efSearch, k) / fraction))
    if allowed.size <= hnsw.nb_neighbors(0) * ef:
        return search_exact_subset(ids.index, q, k, allowed)
    scores, found = search_with_selector(ids, q, k, allowed, ef_search=ef)
    short = np.flatnonzero((found >= 0).sum(axis=1) < want)
    if short.size:
        scores[short], found[short] = search_exact_subset(ids.index, q[short], k, allowed)
    return scores, found


def search_ivf_filtered(
    ids: IdMapping, q: FloatArray, k: int, allowed: IdArray
) -> tuple[FloatArray, IdArray]:
    """IVF: the selector with ``nprobe`` raised by the allowed fraction, doubled while short."""
    ntotal = int(ids.index.ntotal)
    want = min(k, allowed.size)
    ivf = anatomy.ivf(ids.index)
    assert ivf is not None
    nlist = int(ivf.nlist)
    nprobe = min(nlist, math.ceil(ivf.nprobe * ntotal / allowed.size))
    scores, found = search_with_selector(ids, q, k, allowed, nprobe=nprobe)
    short = np.flatnonzero((found >= 0).sum(axis=1) < want)
    while short.size and nprobe < nlist:
        nprobe = min(nlist, 2 * nprobe)
        part = search_with_selector(ids, q[short], k, allowed, nprobe=nprobe)
        scores[short], found[short] = part
        short = short[(part[1] >= 0).sum(axis=1) < want]
    return scores, found


def search_gpu_filtered(
    gpu_index: Any,
    ids: IdMapping,
    kind: anatomy.IndexKind,
    factory: str,
    q: FloatArray,
    k: int,
    allowed: IdArray,
) -> tuple[FloatArray, IdArray]:
    """Over-fetch on the GPU copy; queries still short at the GPU's k limit go to the CPU."""
    scores, found, short = search_by_overfetch(
        gpu_index.search, q, k, allowed, ntotal=int(ids.index.ntotal), max_fetch=gpu.GPU_MAX_K
    )
    if short.any():
        rows = np.flatnonzero(short)
        scores[rows], found[rows] = search_filtered_cpu(ids, kind, factory, q[rows], k, allowed)
    return scores, found


def search_with_selector(
    ids: IdMapping,
    q: FloatArray,
    k: int,
    allowed: IdArray,
    *,
    ef_search: int | None = None,
    nprobe: int | None = None,
) -> tuple[FloatArray, IdArray]:
    """One search of the CPU index restricted to ``allowed`` by an ID selector inside FAISS."""
    sel = faiss.IDSelectorBatch(allowed)
    keep: list[Any] = [sel]
    params = selector_params(ids.index, sel, keep, ef_search=ef_search, nprobe=nprobe)
    return ids.search(q, k, params)


def search_exact_subset(
    index: Any, q: FloatArray, k: int, allowed: IdArray
) -> tuple[FloatArray, IdArray]:
    """Score the ``allowed`` vectors exactly (reconstructed by id from the CPU index)."""
    vectors = np.asarray(index.reconstruct_batch(allowed), dtype=np.float32)
    return exact_top_k(q, vectors, allowed, k)


def exact_top_k(
    queries: FloatArray, vectors: FloatArray, ids: IdArray, k: int
) -> tuple[FloatArray, IdArray]:
    """Exact inner-product top-``k`` of ``queries`` over ``vectors`` (numpy, chunked).

    Ties are broken by position, so results are deterministic; missing hits are ``-1``/-inf.
    """
    nq = len(queries)
    out_scores, out_ids = empty_result(nq, k)
    kk = min(k, len(vectors))
    if kk == 0 or nq == 0:
        return out_scores, out_ids
    chunk = max(1, EXACT_CHUNK_ELEMENTS // max(1, len(vectors)))
    for start in range(0, nq, chunk):
        scores = queries[start : start + chunk] @ vectors.T  # (q, n)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -top_scores), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        out_scores[start : start + chunk, :kk] = np.take_along_axis(scores, top, axis=1)
        out_ids[start : start + chunk, :kk] = ids[top]
    return out_scores, out_ids


def search_by_overfetch(
    search: SearchFn,
    queries: FloatArray,
    k: int,
    allowed_sorted: IdArray,
    *,
    ntotal: int,
    max_fetch: int,
) -> tuple[FloatArray, IdArray, npt.NDArray[np.bool_]]:
    """Top-``k`` among ``allowed_sorted`` ids by searching for more and filtering afterwards.

    For indexes that take no ID selector (FAISS GPU indexes). The first search asks for
    ``k·⌈ntotal / allowed⌉`` hits (enough if the allowed ids were spread evenly); each query
    that got fewer than ``min(k, allowed)`` allowed hits is searched again with ``×4`` as
    many, until it has them or the fetch covers the whole index. ``max_fetch`` caps one
    search (GPU: 2048); the returned boolean mask marks queries still short at the cap,
    which the caller must answer another way.
    """
    nq = len(queries)
    out_scores, out_ids = empty_result(nq, k)
    want = min(k, allowed_sorted.size)
    ceiling = min(ntotal, max_fetch)
    fetch = min(ceiling, k * math.ceil(ntotal / max(1, allowed_sorted.size)))
    pending = np.arange(nq)
    while pending.size:
        scores, ids = search(np.ascontiguousarray(queries[pending]), fetch)
        keep = isin_sorted(ids, allowed_sorted) & (ids >= 0)
        keep &= np.cumsum(keep, axis=1) <= k
        counts = keep.sum(axis=1)
        final = fetch >= ceiling
        done = (counts >= want) | final
        for row in np.flatnonzero(done):
            cols = np.flatnonzero(keep[row])
            out_scores[pending[row], : cols.size] = scores[row, cols]
            out_ids[pending[row], : cols.size] = ids[row, cols]
        if final:
            short = np.zeros(nq, dtype=bool)
            if fetch < ntotal:
                short[pending[counts < want]] = True
            return out_scores, out_ids, short
        pending = pending[~done]
        fetch = min(ceiling, fetch * OVERFETCH_GROWTH)
    return out_scores, out_ids, np.zeros(nq, dtype=bool)
