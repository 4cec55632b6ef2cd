"""How a FAISS index is nested, read from the index object itself.

An index may be wrapped in an ``IndexIDMap`` (ids), an ``IndexPreTransform`` or an
``IndexRefine`` (re-ranking) around the index that searches (Flat, HNSW, IVF). The
functions below take the *owning* index object and downcast only locally: a downcast proxy
of a sub-index does not keep its owner alive.
"""

from __future__ import annotations

from typing import Any, Literal

import faiss

IndexKind = Literal["flat", "graph", "ivf", "other"]

MIN_POINTS_PER_CENTROID = 39
"""FAISS warns below 39 training points per k-means centroid; fewer gives poor centroids."""


def core(index: Any) -> Any:
    """The innermost searching index under IDMap, pre-transform and refine wrappers."""
    sub = faiss.downcast_index(index)
    while True:
        if isinstance(sub, faiss.IndexIDMap | faiss.IndexPreTransform):
            sub = faiss.downcast_index(sub.index)
        elif isinstance(sub, faiss.IndexRefine):
            sub = faiss.downcast_index(sub.base_index)
        else:
            return sub


def kind(index: Any) -> IndexKind:
    """``flat`` (exact), ``graph`` (HNSW), ``ivf`` or ``other``: decides the filter strategy."""
    inner = core(index)
    if isinstance(inner, faiss.IndexFlat):
        return "flat"
    if isinstance(inner, faiss.IndexHNSW):
        return "graph"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "other"


def has_native_ids(index: Any) -> bool:
    """True for IVF (possibly behind a pre-transform) and IDMap indexes: they store ids."""
    sub = faiss.downcast_index(index)
    while isinstance(sub, faiss.IndexPreTransform):
        sub = faiss.downcast_index(sub.index)
    return isinstance(sub, faiss.IndexIVF | faiss.IndexIDMap)


def has_refine(index: Any) -> bool:
    """Whether ``index`` re-ranks its candidates with a refine stage."""
    sub = faiss.downcast_index(index)
    while isinstance(sub, faiss.IndexIDMap | faiss.IndexPreTransform):
        sub = faiss.downcast_index(sub.index)
    return isinstance(sub, faiss.IndexRefine)


def ivf(index: Any) -> Any | None:
    """The IVF index inside ``index``, or None."""
    return faiss.try_extract_index_ivf(index)


def min_training_points(index: Any) -> int:
    """Vectors needed to train ``index`` well: 39 per k-means centroid (IVF lists, PQ codes)."""
    if index.is_trained:
        return 0
    need = 1
    stack = [faiss.downcast_index(index)]
    while stack:
        sub = stack.pop()
        if isinstance(sub, faiss.IndexIDMap | faiss.IndexPreTransform):
            stack.append(faiss.downcast_index(sub.index))
        elif isinstance(sub, faiss.IndexRefine):
            stack += [faiss.downcast_index(sub.base_index), faiss.downcast_index(sub.refine_index)]
        elif isinstance(sub, faiss.IndexHNSW):
            stack.append(faiss.downcast_index(sub.storage))
        if isinstance(sub, faiss.IndexIVF):
            need = max(need, MIN_POINTS_PER_CENTROID * sub.nlist)
        pq = getattr(sub, "pq", None)
        if pq is not None:
            need = max(need, MIN_POINTS_PER_CENTROID * pq.ksub)
    return need
