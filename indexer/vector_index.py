"""FAISS index over L2-normalised embeddings; the FAISS ids are the case ids (DESIGN.md §6, §7).

Everything FAISS-specific in the project lives here: choosing an ``index_factory`` string,
building (sampling, training, adding with ids), searching (with an optional set of allowed
ids), adding and removing, saving next to a JSON sidecar and loading with checks. The SQL
store and the service talk to :class:`VectorIndex` only.

Decisions
---------
* **Metric.** Inner product on unit vectors (cosine similarity). Vectors whose norm is off by
  more than :data:`NORM_TOLERANCE` are re-normalised with a warning; non-finite or zero
  vectors are refused (they cannot be normalised and would poison an index silently).
* **Ids.** FAISS ids are the SQL primary keys (non-negative int64; ``-1`` is FAISS's "no
  hit"). Factories without native ids (Flat, HNSW, refine stages) are wrapped in
  ``IndexIDMap2``, which also keeps the id → row map that ``reconstruct`` by id needs. IVF
  indexes store ids natively and are *not* wrapped: ``IndexIDMap.remove_ids`` assumes the
  wrapped index renumbers its rows in order after a removal, which IVF does not do.
* **Training.** Indexes that need training are trained on a seeded sample of
  ``train_sample`` vectors, raised to FAISS's recommended 39 points per centroid when the
  archive has that many. An archive smaller than that minimum (or empty) gets an exact
  ``Flat`` index instead; the reason is logged and recorded in the sidecar
  (``fallback_reason``), and :attr:`VectorIndex.spec` is the index actually built.
* **Filtered search** (``allowed_ids``) happens inside FAISS where it can, see
  :meth:`VectorIndex.search`; over-fetching is the fallback for GPU indexes.
* **GPU.** With ``use_gpu`` (default: ``faiss.get_num_gpus() > 0``) the CPU index stays the
  source of truth (it is what :meth:`VectorIndex.save` writes, and add/remove change it) and
  a GPU copy — sharded over all GPUs when there are several — answers searches. IVF coarse
  k-means runs on the GPU during :meth:`VectorIndex.build`. FAISS has no GPU HNSW, so graph
  indexes stay on the CPU (logged). After add/remove the GPU copy is made again.
* **Files.** ``index.faiss`` + ``index.json`` (and ``vectors.npy`` + ``ids.npy`` from
  :func:`save_vectors`), each written under a temporary name, fsynced and moved into place
  with ``os.replace``. The sidecar records the size and SHA-256 of ``index.faiss``, so a
  truncated, corrupt or mismatched pair is refused on load instead of crashing in FAISS.
* **Threads.** This module never sets FAISS's OpenMP thread count (a process-wide
  setting). One query gains nothing from OpenMP, and on busy cores every parallel region
  waits for descheduled threads (measured: an HNSW query 0.1 ms alone, 7 ms with 2 threads on
  2 loaded cores), so ids under an IDMap are mapped in numpy rather than by
  ``IndexIDMap.search``'s parallel loop, and a server answering single queries from several
  request threads should call ``faiss.omp_set_num_threads(1)``.
* **Concurrency.** Concurrent :meth:`VectorIndex.search` calls are safe; ``add``,
  ``remove``, ``set_search_params`` and ``save`` must not run concurrently with anything
  else on the same object (new versions are built as new objects in new folders).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import faiss
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IdArray = npt.NDArray[np.int64]
SearchFn = Callable[[FloatArray, int], tuple[FloatArray, IdArray]]
IndexKind = Literal["flat", "graph", "ivf", "other"]

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
SIDECAR_FILE = "index.json"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.npy"

NORM_TOLERANCE = 1e-3
"""Largest | ‖v‖ − 1 | accepted as already normalised."""
FLAT_MAX_VECTORS = 50_000
"""Below this many vectors :func:`choose_factory` picks exact search (≤ 12.8 M MACs a query)."""
HNSW_M = 32
HNSW_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 200
"""Default efSearch for HNSW32 (bench/index_speed_search.py sweeps it: recall@10 ≥ 0.95)."""
IVF_REFINE_K_FACTOR = 8
"""The refine stage re-ranks ``k × 8`` IVF-PQ candidates with the finer codes."""
MIN_POINTS_PER_CENTROID = 39
"""FAISS warns below 39 training points per k-means centroid; fewer gives poor centroids."""
IDMAP2_BYTES_PER_VECTOR = 8 + 48
"""``id_map`` entry + ``rev_map`` hash-map node and bucket (libstdc++ ``unordered_map``)."""
GPU_MAX_K = 2048
"""Largest k a FAISS GPU index returns in one search."""
OVERFETCH_GROWTH = 4
ADD_BATCH = 100_000
"""Vectors per ``add_with_ids`` call during a build (progress is logged between batches)."""
EXACT_CHUNK_ELEMENTS = 16_000_000
"""Query × vector scores computed at once by the exact subset search (64 MB of float32)."""

METRIC_NAME = "inner_product"


class VectorIndexError(RuntimeError):
    """A vector index cannot be built, searched, changed, saved or loaded as asked."""


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index to build, and the search parameters to apply to it.

    ``factory`` is ``"Flat"`` (exact inner product) or any ``faiss.index_factory`` string,
    e.g. ``"HNSW32,Flat"`` or ``"IVF4096,PQ64x8,Refine(SQ8)"``. ``search_params`` are
    ``faiss.ParameterSpace`` names and values (``efSearch``, ``nprobe``, ``k_factor_rf``, …).
    """

    factory: str
    dim: int
    search_params: Mapping[str, int | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.factory.strip():
            raise VectorIndexError("an index factory string is required (e.g. 'Flat')")
        if self.dim < 1:
            raise VectorIndexError(f"the vector dimension must be positive, got {self.dim}")
        object.__setattr__(self, "search_params", dict(self.search_params))


# --------------------------------------------------------------------------- factory choice


def set_search_threads(threads: int) -> None:
    """FAISS's OpenMP thread count for this process (1 for a server answering single
    queries; see the module doc)."""
    faiss.omp_set_num_threads(max(1, threads))


def hnsw_bytes_per_vector(dim: int, m: int = HNSW_M) -> float:
    """Memory of one vector in ``IDMap2,HNSW{m},Flat``.

    ``4·dim`` (float32 vector) + ``4·(2m + m/(m−1))`` (int32 links: ``2m`` on level 0, ``m`` on
    each upper level, of which a node has ``1/(m−1)`` on average) + 12 (level and offset
    bookkeeping) + :data:`IDMAP2_BYTES_PER_VECTOR`. 1,352 bytes for 256-d, m = 32.
    """
    return 4 * dim + 4 * (2 * m + m / (m - 1)) + 12 + IDMAP2_BYTES_PER_VECTOR


def ivf_pq_bytes_per_vector(dim: int, pq_m: int, *, refine: bool) -> float:
    """Memory of one vector in ``IVF…,PQ{pq_m}x8`` (+ ``Refine(SQ8)`` and its ``IDMap2``).

    ``pq_m`` code bytes + 8 (the id in the inverted list); with the refine stage also ``dim``
    bytes (8-bit scalar-quantised copy) + :data:`IDMAP2_BYTES_PER_VECTOR` (a refine stage has
    no native ids, so the index is wrapped).
    """
    base = pq_m + 8
    return base + dim + IDMAP2_BYTES_PER_VECTOR if refine else base


def ivf_list_count(n: int) -> int:
    """Inverted lists for ``n`` vectors: 4·√n rounded to a power of two, ≤ n / 39."""
    k = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    while k > 1 and k * MIN_POINTS_PER_CENTROID > n:
        k //= 2
    return k


def pq_subquantizers(dim: int) -> int:
    """PQ sub-quantizers: the largest divisor of ``dim`` that is ≤ min(64, dim/4), at least 1."""
    limit = max(1, min(64, dim // 4))
    return max(m for m in range(1, limit + 1) if dim % m == 0)


def default_nprobe(nlist: int) -> int:
    """Inverted lists probed by default: nlist/64 clipped to [16, 256] (and to nlist)."""
    return min(nlist, 256, max(16, nlist // 64))


def default_search_params(index: Any) -> dict[str, int | float]:
    """The search parameters :func:`choose_factory` would give this kind of index.

    HNSW: ``efSearch = 128`` (FAISS's own default, 16, misses recall@10 ≥ 0.95 at scale);
    IVF: ``nprobe`` = :func:`default_nprobe`; a refine stage: ``k_factor_rf = 8`` (FAISS's
    default, 1, re-ranks nothing).
    """
    params: dict[str, int | float] = {}
    kind = _kind(index)
    ivf = _ivf(index)
    if kind == "graph":
        params["efSearch"] = HNSW_EF_SEARCH
    elif kind == "ivf" and ivf is not None:
        params["nprobe"] = default_nprobe(int(ivf.nlist))
    if _has_refine(index):
        params["k_factor_rf"] = IVF_REFINE_K_FACTOR
    return params


def choose_factory(n: int, dim: int, *, memory_budget_bytes: int = 8 * 2**30) -> IndexSpec:
    """Pick an index for ``n`` vectors of ``dim`` dimensions, autofaiss-style.

    1. ``n < 50,000`` → ``Flat``: exact, and a query costs < 50,000 × dim multiply-adds
       (12.8 M at 256-d: a few ms on one core).
    2. ``HNSW32,Flat`` with ``efSearch = 128`` when ``n × hnsw_bytes_per_vector(dim)`` fits
       the budget: the fastest CPU search at recall@10 ≥ 0.95, exact re-scoring for free
       (full vectors). Cannot remove ids (rebuild from :func:`load_vectors`).
    3. ``IVF{k},PQ{m}x8,Refine(SQ8)`` when ``n × ivf_pq_bytes_per_vector(dim, m, refine=True)``
       fits: k = :func:`ivf_list_count`, m = :func:`pq_subquantizers`, ``nprobe`` =
       k/64 clipped to [16, 256], ``k_factor_rf = 8``.
    4. ``IVF{k},PQ{m}x8`` without the refine stage when only the codes fit.

    Raises :class:`VectorIndexError` when not even the PQ codes fit the budget.
    """
    if n < 0 or dim < 1:
        raise VectorIndexError(f"cannot size an index for n={n}, dim={dim}")
    if n < FLAT_MAX_VECTORS:
        return IndexSpec("Flat", dim, {})
    if n * hnsw_bytes_per_vector(dim) <= memory_budget_bytes:
        return IndexSpec(f"HNSW{HNSW_M},Flat", dim, {"efSearch": HNSW_EF_SEARCH})
    nlist = ivf_list_count(n)
    pq_m = pq_subquantizers(dim)
    nprobe = default_nprobe(nlist)
    if n * ivf_pq_bytes_per_vector(dim, pq_m, refine=True) <= memory_budget_bytes:
        return IndexSpec(
            f"IVF{nlist},PQ{pq_m}x8,Refine(SQ8)",
            dim,
            {"nprobe": nprobe, "k_factor_rf": IVF_REFINE_K_FACTOR},
        )
    if n * ivf_pq_bytes_per_vector(dim, pq_m, refine=False) <= memory_budget_bytes:
        return IndexSpec(f"IVF{nlist},PQ{pq_m}x8", dim, {"nprobe": nprobe})
    need = n * ivf_pq_bytes_per_vector(dim, pq_m, refine=False)
    raise VectorIndexError(
        f"{n} vectors of dim {dim} need ≥ {need / 2**30:.1f} GiB even as IVF-PQ codes; "
        f"the memory budget is {memory_budget_bytes / 2**30:.1f} GiB"
    )


# --------------------------------------------------------------------------- validation


def _as_ids(ids: npt.ArrayLike, what: str = "ids") -> IdArray:
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


def _as_unit_vectors(vectors: npt.ArrayLike, dim: int, what: str) -> FloatArray:
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


def _isin_sorted(values: npt.NDArray[np.int64], sorted_unique: IdArray) -> npt.NDArray[np.bool_]:
    """Elementwise ``values ∈ sorted_unique`` (any shape), by binary search."""
    if sorted_unique.size == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.searchsorted(sorted_unique, values).clip(0, sorted_unique.size - 1)
    return np.asarray(sorted_unique[pos] == values)


# --------------------------------------------------------------------------- index anatomy
# Functions below take the *owning* index object and downcast only locally: a downcast proxy
# of a sub-index does not keep its owner alive.


def _core(index: Any) -> Any:
    """The innermost searching index under IDMap, pre-transform and refine wrappers."""
    sub = faiss.downcast_index(index)
    while True:
        if isinstance(sub, faiss.IndexIDMap | faiss.IndexPreTransform):
            sub = faiss.downcast_index(sub.index)
        elif isinstance(sub, faiss.IndexRefine):
            sub = faiss.downcast_index(sub.base_index)
        else:
            return sub


def _kind(index: Any) -> IndexKind:
    """``flat`` (exact), ``graph`` (HNSW), ``ivf`` or ``other``: decides the filter strategy."""
    core = _core(index)
    if isinstance(core, faiss.IndexFlat):
        return "flat"
    if isinstance(core, faiss.IndexHNSW):
        return "graph"
    if isinstance(core, faiss.IndexIVF):
        return "ivf"
    return "other"


def _has_native_ids(index: Any) -> bool:
    """True for IVF (possibly behind a pre-transform) and IDMap indexes: they store ids."""
    sub = faiss.downcast_index(index)
    while isinstance(sub, faiss.IndexPreTransform):
        sub = faiss.downcast_index(sub.index)
    return isinstance(sub, faiss.IndexIVF | faiss.IndexIDMap)


def _min_training_points(index: Any) -> int:
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


def _has_refine(index: Any) -> bool:
    sub = faiss.downcast_index(index)
    while isinstance(sub, faiss.IndexIDMap | faiss.IndexPreTransform):
        sub = faiss.downcast_index(sub.index)
    return isinstance(sub, faiss.IndexRefine)


def _ivf(index: Any) -> Any | None:
    """The IVF index inside ``index``, or None."""
    return faiss.try_extract_index_ivf(index)


def _stored_ids(index: Any) -> IdArray:
    """Every id stored in ``index`` (IDMap order, or inverted-list order for IVF)."""
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexIDMap):
        return np.asarray(faiss.vector_to_array(top.id_map), dtype=np.int64)
    ivf = _ivf(index)
    if ivf is None:
        raise VectorIndexError(f"cannot list the ids of a {type(top).__name__}")
    invlists = ivf.invlists
    parts: list[IdArray] = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            ptr = invlists.get_ids(list_no)
            parts.append(np.array(faiss.rev_swig_ptr(ptr, size), dtype=np.int64))
            invlists.release_ids(list_no, ptr)
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _selector_params(
    index: Any, sel: Any, keep: list[Any], *, ef_search: int | None, nprobe: int | None
) -> Any:
    """``SearchParameters`` for ``index.search`` restricted to ``sel`` (ids as callers see them).

    Mirrors the index's nesting: an IDMap translates ``sel`` to row numbers
    (``IDSelectorTranslated``), a pre-transform or refine stage passes typed parameters to
    the index below it, and the core gets ``SearchParametersHNSW`` (efSearch),
    ``SearchParametersIVF`` (nprobe) or plain ``SearchParameters`` — carrying the index's own
    settings unless overridden. Every object is appended to ``keep``: the C++ side holds raw
    pointers, so the Python objects must outlive the search.
    """
    sub = faiss.downcast_index(index)
    params: Any
    if isinstance(sub, faiss.IndexIDMap):
        # the C++ vector itself: a numpy copy would leave the selector a dangling reference
        translated = faiss.IDSelectorTranslated(cast(Any, sub.id_map), sel)
        keep.append(translated)
        return _selector_params(sub.index, translated, keep, ef_search=ef_search, nprobe=nprobe)
    if isinstance(sub, faiss.IndexPreTransform):
        inner = _selector_params(sub.index, sel, keep, ef_search=ef_search, nprobe=nprobe)
        params = faiss.SearchParametersPreTransform()
        params.index_params = inner
    elif isinstance(sub, faiss.IndexRefine):
        inner = _selector_params(sub.base_index, sel, keep, ef_search=ef_search, nprobe=nprobe)
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = sub.k_factor
        params.base_index_params = inner
    elif isinstance(sub, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
        params.efSearch = int(ef_search or sub.hnsw.efSearch)
        params.sel = sel
    elif isinstance(sub, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = int(nprobe or sub.nprobe)
        params.max_codes = sub.max_codes
        params.sel = sel
    else:
        params = faiss.SearchParameters()
        params.sel = sel
    keep.append(params)
    return params


def _apply_search_params(index: Any, params: Mapping[str, int | float], factory: str) -> None:
    """Set ``params`` on ``index`` through ``faiss.ParameterSpace`` (CPU index)."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError as err:
            raise VectorIndexError(
                f"search parameter {name}={value} does not apply to a {factory!r} index"
            ) from err


# --------------------------------------------------------------------------- search helpers


def _empty_result(nq: int, k: int) -> tuple[FloatArray, IdArray]:
    return np.full((nq, k), -np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


def _finalised(scores: npt.ArrayLike, ids: npt.ArrayLike, *, k: int) -> tuple[FloatArray, IdArray]:
    """(Q, k) float32 scores and int64 ids: padded, FAISS's ``-FLT_MAX`` misses as ``-inf``."""
    found_ids = np.asarray(ids, dtype=np.int64)
    out_scores, out_ids = _empty_result(len(found_ids), k)
    width = found_ids.shape[1]
    out_ids[:, :width] = found_ids
    out_scores[:, :width] = np.where(found_ids >= 0, scores, -np.inf)
    return out_scores, out_ids


def exact_top_k(
    queries: FloatArray, vectors: FloatArray, ids: IdArray, k: int
) -> tuple[FloatArray, IdArray]:
    """Exact inner-product top-``k`` of ``queries`` over ``vectors`` (numpy, chunked).

    Ties are broken by position, so results are deterministic; missing hits are ``-1``/-inf.
    """
    nq = len(queries)
    out_scores, out_ids = _empty_result(nq, k)
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
    out_scores, out_ids = _empty_result(nq, k)
    want = min(k, allowed_sorted.size)
    ceiling = min(ntotal, max_fetch)
    fetch = min(ceiling, k * math.ceil(ntotal / max(1, allowed_sorted.size)))
    pending = np.arange(nq)
    while pending.size:
        scores, ids = search(np.ascontiguousarray(queries[pending]), fetch)
        keep = _isin_sorted(ids, allowed_sorted) & (ids >= 0)
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


# --------------------------------------------------------------------------- GPU


def _gpu_count() -> int:
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return int(get_num_gpus()) if get_num_gpus is not None else 0


def _resolve_use_gpu(use_gpu: bool | None) -> bool:
    """None → use the GPU(s) when FAISS sees any; True without a GPU is an error."""
    count = _gpu_count()
    if use_gpu is None:
        return count > 0
    if use_gpu and count == 0:
        raise VectorIndexError("use_gpu=True but FAISS sees no GPU (is faiss-gpu installed?)")
    return use_gpu


def _gpu_copy(index: Any, search_params: Mapping[str, int | float], *, required: bool) -> Any:
    """A copy of CPU ``index`` on all GPUs (sharded when several), or None where unsupported."""
    if _kind(index) == "graph":
        logger.info("FAISS has no GPU HNSW; searching this graph index on the CPU")
        return None
    count = _gpu_count()
    try:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = count > 1
        gpu_index = faiss.index_cpu_to_all_gpus(index, co=options, ngpu=count)
        space = faiss.GpuParameterSpace()
        for name, value in search_params.items():
            space.set_index_parameter(gpu_index, name, float(value))
    except (RuntimeError, AttributeError) as err:
        if required:
            raise VectorIndexError(f"cannot move this index to the GPU: {err}") from err
        logger.info("keeping the index on the CPU: %s", err)
        return None
    logger.info("index copied to %d GPU(s)%s", count, " (sharded)" if count > 1 else "")
    return gpu_index


def _train_on_gpu_if_possible(index: Any, sample: FloatArray) -> bool:
    """Train ``index`` with its IVF coarse k-means on the GPU(s); False if not attempted."""
    ivf = _ivf(index)
    if ivf is None or ivf.is_trained:
        return False
    try:
        clustering = faiss.index_cpu_to_all_gpus(faiss.IndexFlat(ivf.d, ivf.metric_type))
    except (RuntimeError, AttributeError) as err:
        logger.info("coarse k-means on the CPU: %s", err)
        return False
    ivf.clustering_index = clustering
    try:
        index.train(sample)
    finally:
        ivf.clustering_index = None
    return True


# --------------------------------------------------------------------------- files


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        _fsync_file(folder)
    except OSError:  # some filesystems refuse fsync on directories; the data is synced
        logger.debug("could not fsync directory %s", folder)


def _temp_path(folder: Path, name: str) -> Path:
    return folder / f".{name}.{uuid.uuid4().hex[:8]}.tmp"


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _replace_all(pairs: list[tuple[Path, Path]], folder: Path) -> None:
    """``os.replace`` each (temporary, final) pair, then fsync the folder."""
    for tmp, final in pairs:
        tmp.replace(final)
    _fsync_dir(folder)


def _discard(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _write_npy(path: Path, array: npt.NDArray[Any]) -> None:
    with path.open("wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def save_vectors(folder: Path, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
    """Store raw float32 embeddings and their ids as ``vectors.npy`` + ``ids.npy``, atomically.

    Kept next to an index so that a new version (another factory, or without removed ids on
    an HNSW index) can be built without embedding the images again.
    """
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    id_arr = _as_ids(ids)
    if vecs.ndim != 2 or len(vecs) != len(id_arr):
        raise VectorIndexError(
            f"vectors {vecs.shape} and ids {id_arr.shape} must be (n, dim) and (n,)"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = [
        (_temp_path(folder, VECTORS_FILE), folder / VECTORS_FILE),
        (_temp_path(folder, IDS_FILE), folder / IDS_FILE),
    ]
    try:
        _write_npy(pairs[0][0], vecs)
        _write_npy(pairs[1][0], id_arr)
        _replace_all(pairs, folder)
    finally:
        _discard([tmp for tmp, _ in pairs])


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


# --------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class _Provenance:
    """How an index came to be; written to the sidecar."""

    checkpoint_sha256: str
    factory_requested: str
    search_params_requested: dict[str, int | float]
    fallback_reason: str | None
    created_at: str
    build_seconds: float
    train_vectors: int
    seed: int


_REQUIRED_SIDECAR_KEYS = (
    "format_version",
    "checkpoint_sha256",
    "dim",
    "factory",
    "search_params",
    "vector_count",
    "index_bytes",
    "index_sha256",
)


class VectorIndex:
    """Inner product over L2-normalised float32 vectors with int64 ids (the case ids).

    Made by :meth:`build` or :meth:`load`; see the module docstring for the decisions.
    """

    def __init__(
        self, index: Any, spec: IndexSpec, provenance: _Provenance, *, use_gpu: bool
    ) -> None:
        self._index = index  # the CPU index: source of truth, what save() writes
        self._spec = spec
        self._provenance = provenance
        self._kind = _kind(index)
        self._use_gpu = use_gpu
        self._gpu_index: Any = None
        top = faiss.downcast_index(index)
        # the index under an IDMap (a non-owning proxy; self._index keeps it alive)
        self._wrapped: Any = top.index if isinstance(top, faiss.IndexIDMap) else None
        self._id_map: IdArray | None = None  # row → id of the IDMap, cached
        self._sorted_ids: IdArray | None = None
        if use_gpu:
            self._gpu_index = _gpu_copy(index, spec.search_params, required=False)

    # ---------------------------------------------------------------- construction

    @classmethod
    def build(
        cls,
        vectors: npt.ArrayLike,
        ids: npt.ArrayLike,
        spec: IndexSpec,
        *,
        checkpoint_sha256: str,
        train_sample: int = 100_000,
        seed: int = 0,
        use_gpu: bool | None = None,
    ) -> VectorIndex:
        """Build an index of ``vectors`` (n, dim) with ``ids`` (n,) as described by ``spec``.

        Validates and normalises the vectors, trains on a seeded sample when the factory
        needs training (falling back to ``Flat`` when there are too few vectors), adds in
        batches with the ids, and applies ``spec.search_params`` over
        :func:`default_search_params` (so ``IndexSpec("HNSW32,Flat", d)`` searches with
        efSearch 128, not FAISS's 16).
        """
        if not checkpoint_sha256:
            raise VectorIndexError("checkpoint_sha256 is required: an index records its model")
        start = time.perf_counter()
        created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        gpu = _resolve_use_gpu(use_gpu)
        vecs = _as_unit_vectors(vectors, spec.dim, "vectors")
        id_arr = _as_ids(ids)
        if len(id_arr) != len(vecs):
            raise VectorIndexError(f"{len(vecs)} vectors but {len(id_arr)} ids")
        if np.unique(id_arr).size != id_arr.size:
            raise VectorIndexError("ids must be unique")

        index, effective, reason = _new_index(spec, len(vecs))
        train_vectors = 0
        if not index.is_trained:
            train_vectors = _train(index, vecs, train_sample, seed, gpu=gpu)
        _apply_search_params(index, effective.search_params, effective.factory)
        _add_in_batches(index, vecs, id_arr)
        provenance = _Provenance(
            checkpoint_sha256=checkpoint_sha256,
            factory_requested=spec.factory,
            search_params_requested=dict(spec.search_params),
            fallback_reason=reason,
            created_at=created_at,
            build_seconds=round(time.perf_counter() - start, 3),
            train_vectors=train_vectors,
            seed=seed,
        )
        logger.info(
            "built %s index of %d vectors in %.1f s",
            effective.factory,
            index.ntotal,
            provenance.build_seconds,
        )
        return cls(index, effective, provenance, use_gpu=gpu)

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        expected_checkpoint_sha256: str | None = None,
        use_gpu: bool | None = None,
    ) -> VectorIndex:
        """Load ``folder/index.faiss`` after checking it against ``folder/index.json``.

        The checkpoint is checked first (cheap); then the file's size and SHA-256, FAISS's own
        reading, and the dimension, vector count and metric. Any failure is a
        :class:`VectorIndexError` naming the folder.
        """
        folder = Path(folder)
        sidecar = _read_sidecar(folder)
        built_with = str(sidecar["checkpoint_sha256"])
        if expected_checkpoint_sha256 is not None and built_with != expected_checkpoint_sha256:
            raise VectorIndexError(
                f"index in {folder} was built with checkpoint {built_with[:12]}…, "
                f"the query model is {expected_checkpoint_sha256[:12]}…; rebuild the index "
                "with this checkpoint or load the matching one"
            )
        index = _read_index_file(folder, sidecar)
        dim = int(sidecar["dim"])
        spec = IndexSpec(str(sidecar["factory"]), dim, dict(sidecar["search_params"]))
        _apply_search_params(index, spec.search_params, spec.factory)
        provenance = _Provenance(
            checkpoint_sha256=built_with,
            factory_requested=str(sidecar.get("factory_requested", spec.factory)),
            search_params_requested=dict(sidecar.get("search_params_requested", {})),
            fallback_reason=sidecar.get("fallback_reason"),
            created_at=str(sidecar.get("created_at", "")),
            build_seconds=float(sidecar.get("build_seconds", 0.0)),
            train_vectors=int(sidecar.get("train_vectors", 0)),
            seed=int(sidecar.get("seed", 0)),
        )
        return cls(index, spec, provenance, use_gpu=_resolve_use_gpu(use_gpu))

    # ---------------------------------------------------------------- properties

    @property
    def ntotal(self) -> int:
        """How many vectors the index holds."""
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return self._spec.dim

    @property
    def spec(self) -> IndexSpec:
        """The index actually built (``Flat`` after a fallback) and its search parameters."""
        return self._spec

    @property
    def checkpoint_sha256(self) -> str:
        return self._provenance.checkpoint_sha256

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a GPU copy."""
        return self._gpu_index is not None

    @property
    def sidecar(self) -> dict[str, Any]:
        """What ``index.json`` records (without the file's size and hash, added by save)."""
        p = self._provenance
        return {
            "format_version": FORMAT_VERSION,
            "checkpoint_sha256": p.checkpoint_sha256,
            "dim": self.dim,
            "metric": METRIC_NAME,
            "factory": self._spec.factory,
            "search_params": dict(self._spec.search_params),
            "factory_requested": p.factory_requested,
            "search_params_requested": dict(p.search_params_requested),
            "fallback_reason": p.fallback_reason,
            "vector_count": self.ntotal,
            "created_at": p.created_at,
            "build_seconds": p.build_seconds,
            "train_vectors": p.train_vectors,
            "seed": p.seed,
            "faiss_version": faiss.__version__,
        }

    def all_ids(self) -> IdArray:
        """The ids stored, in storage order (IDMap order, or inverted-list order for IVF)."""
        return _stored_ids(self._index).copy()

    def _ids_sorted(self) -> IdArray:
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(_stored_ids(self._index))
        return self._sorted_ids

    def _forget_ids(self) -> None:
        self._sorted_ids = None
        self._id_map = None

    # ---------------------------------------------------------------- search

    def search(
        self, queries: npt.ArrayLike, k: int, *, allowed_ids: npt.ArrayLike | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-``k`` ids and inner-product scores for each query (rows of ``queries``).

        Returns ``(scores, ids)``, both ``(Q, k)``, best first; missing hits are id ``-1`` with
        score ``-inf``. A 1-D query is treated as one row. Queries are normalised like the
        vectors (silently).

        ``allowed_ids`` restricts the hits to those ids (unknown ids are ignored):

        * **Flat** (CPU): an ``IDSelectorBatch`` inside FAISS; exact.
        * **HNSW**: a graph search sees about ``efSearch`` allowed nodes only if it explores
          ``efSearch / f`` nodes, f being the allowed fraction, so efSearch is raised to
          ``⌈max(efSearch, k) / f⌉``. Each explored node costs about ``2M`` distance
          evaluations, so when the allowed set is no larger than that (``allowed ≤ 2M · ef'``,
          i.e. ≤ √(2M·efSearch·n) — ~90k of 1M for M = 32, efSearch = 128) the allowed
          vectors are scored exactly instead (``reconstruct`` through the IDMap). Queries a
          selector search leaves with fewer than ``min(k, allowed)`` hits are scored exactly.
        * **IVF**: the selector inside FAISS with ``nprobe`` raised to ``⌈nprobe / f⌉`` (at
          most all lists): a filtered scan computes distances for allowed ids only, so this
          sees as many allowed candidates as an unfiltered search sees candidates, for about
          the same distance work (plus cheap membership tests). Queries still left with fewer
          than ``min(k, allowed)`` hits are searched again with ``nprobe`` doubled, up to all
          lists (then complete).
        * **GPU indexes and anything else without selector support**: over-fetching, see
          :func:`search_by_overfetch`; queries still short at FAISS's GPU k limit are answered
          on the CPU index with the selector strategy above.
        """
        if k < 1:
            raise VectorIndexError(f"k must be at least 1, got {k}")
        raw = np.asarray(queries)
        q = _as_unit_vectors(raw[None, :] if raw.ndim == 1 else raw, self.dim, "queries")
        if self.ntotal == 0 or len(q) == 0:
            return _empty_result(len(q), k)
        if allowed_ids is None:
            return _finalised(*self._search_plain(q, min(k, self.ntotal)), k=k)
        allowed = np.unique(_as_ids(allowed_ids, "allowed_ids"))
        allowed = allowed[_isin_sorted(allowed, self._ids_sorted())]
        if allowed.size == 0:
            return _empty_result(len(q), k)
        k_hits = min(k, int(allowed.size))  # FAISS allocates (Q, k) results: ask for no more
        if self._gpu_index is not None:
            return _finalised(*self._search_gpu_filtered(q, k_hits, allowed), k=k)
        return _finalised(*self._search_cpu_filtered(q, k_hits, allowed), k=k)

    def _search_plain(self, q: FloatArray, k: int) -> tuple[FloatArray, IdArray]:
        if self._gpu_index is not None and k <= GPU_MAX_K:
            scores, ids = self._gpu_index.search(q, k)
        else:
            scores, ids = self._cpu_search(q, k)
        return scores, ids

    def _cpu_search(self, q: FloatArray, k: int, params: Any = None) -> tuple[FloatArray, IdArray]:
        """Search the CPU index; under an IDMap, the wrapped index, mapping rows to ids here.

        ``IndexIDMap.search`` maps rows to ids in an OpenMP parallel loop. For a single query
        that is pure overhead, and when the cores are busy the parallel region waits for a
        descheduled thread: 7 ms instead of 0.1 ms per HNSW query on 2 loaded cores.
        """
        if self._wrapped is None:
            scores, ids = self._index.search(q, k, params=params)
            return scores, ids
        scores, rows = self._wrapped.search(q, k, params=params)
        if self._id_map is None:
            self._id_map = _stored_ids(self._index)
        ids = np.where(rows >= 0, self._id_map[np.maximum(rows, 0)], -1)
        return scores, ids

    def _search_gpu_filtered(
        self, q: FloatArray, k: int, allowed: IdArray
    ) -> tuple[FloatArray, IdArray]:
        scores, ids, short = search_by_overfetch(
            self._gpu_index.search, q, k, allowed, ntotal=self.ntotal, max_fetch=GPU_MAX_K
        )
        if short.any():
            rows = np.flatnonzero(short)
            scores[rows], ids[rows] = self._search_cpu_filtered(q[rows], k, allowed)
        return scores, ids

    def _search_cpu_filtered(
        self, q: FloatArray, k: int, allowed: IdArray
    ) -> tuple[FloatArray, IdArray]:
        """Filtered search on the CPU index; the strategy per kind is in :meth:`search`."""
        want = min(k, allowed.size)
        if self._kind == "graph":
            hnsw = _core(self._index).hnsw
            fraction = allowed.size / self.ntotal
            ef = min(self.ntotal, math.ceil(max(hnsw.efSearch, k) / fraction))
            if allowed.size <= hnsw.nb_neighbors(0) * ef:
                return self._search_exact_subset(q, k, allowed)
            scores, ids = self._search_selector(q, k, allowed, ef_search=ef)
            short = np.flatnonzero((ids >= 0).sum(axis=1) < want)
            if short.size:
                scores[short], ids[short] = self._search_exact_subset(q[short], k, allowed)
            return scores, ids
        if self._kind == "ivf":
            ivf = _ivf(self._index)
            assert ivf is not None
            nlist = int(ivf.nlist)
            nprobe = min(nlist, math.ceil(ivf.nprobe * self.ntotal / allowed.size))
            scores, ids = self._search_selector(q, k, allowed, nprobe=nprobe)
            short = np.flatnonzero((ids >= 0).sum(axis=1) < want)
            while short.size and nprobe < nlist:
                nprobe = min(nlist, 2 * nprobe)
                part = self._search_selector(q[short], k, allowed, nprobe=nprobe)
                scores[short], ids[short] = part
                short = short[(part[1] >= 0).sum(axis=1) < want]
            return scores, ids
        try:
            return self._search_selector(q, k, allowed)
        except RuntimeError as err:  # e.g. an index type whose search ignores or refuses sel
            logger.debug("no ID selector for %s (%s); over-fetching", self._spec.factory, err)
        scores, ids, _ = search_by_overfetch(
            self._cpu_search, q, k, allowed, ntotal=self.ntotal, max_fetch=self.ntotal
        )
        return scores, ids

    def _search_selector(
        self,
        q: FloatArray,
        k: int,
        allowed: IdArray,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[FloatArray, IdArray]:
        sel = faiss.IDSelectorBatch(allowed)
        keep: list[Any] = [sel]
        params = _selector_params(self._index, sel, keep, ef_search=ef_search, nprobe=nprobe)
        return self._cpu_search(q, k, params)

    def _search_exact_subset(
        self, q: FloatArray, k: int, allowed: IdArray
    ) -> tuple[FloatArray, IdArray]:
        vectors = np.asarray(self._index.reconstruct_batch(allowed), dtype=np.float32)
        return exact_top_k(q, vectors, allowed, k)

    # ---------------------------------------------------------------- changes

    def set_search_params(self, params: Mapping[str, int | float]) -> None:
        """Apply new search parameters (e.g. ``{"efSearch": 256}``); the sidecar records them."""
        try:
            _apply_search_params(self._index, params, self._spec.factory)
        except VectorIndexError:
            _apply_search_params(self._index, self._spec.search_params, self._spec.factory)
            raise
        self._spec = replace(self._spec, search_params={**self._spec.search_params, **params})
        self._refresh_gpu()

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Add ``vectors`` with new ``ids`` (ids already in the index are refused)."""
        vecs = _as_unit_vectors(vectors, self.dim, "vectors")
        id_arr = _as_ids(ids)
        if len(id_arr) != len(vecs):
            raise VectorIndexError(f"{len(vecs)} vectors but {len(id_arr)} ids")
        if np.unique(id_arr).size != id_arr.size:
            raise VectorIndexError("ids must be unique")
        present = id_arr[_isin_sorted(id_arr, self._ids_sorted())]
        if present.size:
            raise VectorIndexError(
                f"{present.size} ids are already in the index (e.g. {present[:5].tolist()}); "
                "remove them first"
            )
        if len(vecs) == 0:
            return
        _add_in_batches(self._index, vecs, id_arr)
        self._forget_ids()
        self._refresh_gpu()

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many were removed.

        HNSW graphs (and refine stages) cannot remove vectors: a :class:`VectorIndexError`
        says to rebuild from the stored vectors (:func:`load_vectors`) without those ids.
        """
        id_arr = np.unique(_as_ids(ids))
        if self._kind == "graph":
            raise VectorIndexError(
                f"a {self._spec.factory!r} index cannot remove vectors; rebuild the index "
                "without these ids (from the stored vectors, see load_vectors)"
            )
        if id_arr.size == 0:
            return 0
        try:
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(id_arr)))
        except RuntimeError as err:
            raise VectorIndexError(
                f"a {self._spec.factory!r} index cannot remove vectors ({err}); rebuild the "
                "index without these ids (from the stored vectors, see load_vectors)"
            ) from err
        self._forget_ids()
        self._refresh_gpu()
        return removed

    def _refresh_gpu(self) -> None:
        if self._use_gpu:
            self._gpu_index = _gpu_copy(self._index, self._spec.search_params, required=False)

    # ---------------------------------------------------------------- files

    def save(self, folder: Path) -> None:
        """Write ``folder/index.faiss`` and ``folder/index.json`` atomically (CPU index).

        Both files go to temporary names, are fsynced, and are moved into place index first;
        the sidecar holds the index file's size and SHA-256, so a crash between the two moves
        leaves a pair that :meth:`load` refuses rather than a silently wrong one.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index_tmp = _temp_path(folder, INDEX_FILE)
        sidecar_tmp = _temp_path(folder, SIDECAR_FILE)
        try:
            faiss.write_index(self._index, str(index_tmp))
            _fsync_file(index_tmp)
            sidecar = {
                **self.sidecar,
                "index_file": INDEX_FILE,
                "index_bytes": index_tmp.stat().st_size,
                "index_sha256": _sha256(index_tmp),
                "saved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            with sidecar_tmp.open("w", encoding="utf-8") as f:
                json.dump(sidecar, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            _replace_all(
                [(index_tmp, folder / INDEX_FILE), (sidecar_tmp, folder / SIDECAR_FILE)], folder
            )
        finally:
            _discard([index_tmp, sidecar_tmp])
        logger.info("saved %s index of %d vectors to %s", self._spec.factory, self.ntotal, folder)


# --------------------------------------------------------------------------- build steps


def _new_index(spec: IndexSpec, n: int) -> tuple[Any, IndexSpec, str | None]:
    """An empty CPU index for ``spec``, the spec actually used, and why it differs (or None).

    The spec actually used adds :func:`default_search_params` for parameters ``spec`` omits.
    """
    factory = spec.factory.strip()
    try:
        index = faiss.index_factory(spec.dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise VectorIndexError(f"unknown or invalid index factory {spec.factory!r}") from err
    need = _min_training_points(index)
    if need and n < need:
        reason = (
            f"{n} vectors are fewer than the {need} that training {spec.factory!r} needs "
            f"({MIN_POINTS_PER_CENTROID} per centroid); built an exact Flat index instead"
        )
        logger.warning("%s", reason)
        flat = faiss.index_factory(spec.dim, "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT)
        return flat, IndexSpec("Flat", spec.dim, {}), reason
    if not _has_native_ids(index):
        index = faiss.index_factory(spec.dim, f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)
    core = _core(index)
    if hasattr(core, "hnsw"):
        # FAISS's default efConstruction (40) builds a graph too sparse for recall@10 ≥ 0.95
        # on a million clustered vectors at any affordable efSearch (bench/index_speed_search)
        core.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    params = {**default_search_params(index), **spec.search_params}
    return index, replace(spec, search_params=params), None


def _train(index: Any, vectors: FloatArray, train_sample: int, seed: int, *, gpu: bool) -> int:
    """Train ``index`` on a seeded sample; returns the sample size."""
    n = len(vectors)
    size = min(n, max(train_sample, _min_training_points(index)))
    if size > train_sample:
        logger.info("training sample raised from %d to %d (39 per centroid)", train_sample, size)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
    sample = np.ascontiguousarray(vectors[rows])
    ivf = _ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed
    logger.info("training on %d of %d vectors", size, n)
    try:
        if not (gpu and _train_on_gpu_if_possible(index, sample)):
            index.train(sample)
    except RuntimeError as err:
        raise VectorIndexError(f"training the index failed: {err}") from err
    return size


def _add_in_batches(index: Any, vectors: FloatArray, ids: IdArray) -> None:
    for start in range(0, len(vectors), ADD_BATCH):
        stop = min(start + ADD_BATCH, len(vectors))
        index.add_with_ids(vectors[start:stop], ids[start:stop])
        if len(vectors) > ADD_BATCH:
            logger.info("added %d/%d vectors", stop, len(vectors))


# --------------------------------------------------------------------------- load steps


def _read_sidecar(folder: Path) -> dict[str, Any]:
    path = folder / SIDECAR_FILE
    if not path.is_file():
        raise VectorIndexError(f"no index in {folder}: {SIDECAR_FILE} is missing")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VectorIndexError(f"{path} is not readable JSON: {err}") from err
    if not isinstance(sidecar, dict):
        raise VectorIndexError(f"{path} is not a JSON object")
    missing = [key for key in _REQUIRED_SIDECAR_KEYS if key not in sidecar]
    if missing:
        raise VectorIndexError(f"{path} lacks {', '.join(missing)}")
    if sidecar["format_version"] != FORMAT_VERSION:
        raise VectorIndexError(
            f"{path} has format version {sidecar['format_version']}, this code reads "
            f"{FORMAT_VERSION}; rebuild the index"
        )
    if sidecar.get("metric", METRIC_NAME) != METRIC_NAME:
        raise VectorIndexError(f"{path}: metric {sidecar['metric']!r}, expected {METRIC_NAME}")
    return sidecar


def _read_index_file(folder: Path, sidecar: Mapping[str, Any]) -> Any:
    """Read ``index.faiss``, checking size, hash, dimension, count and metric vs the sidecar."""
    path = folder / INDEX_FILE
    if not path.is_file():
        raise VectorIndexError(f"{path} is missing (the sidecar {SIDECAR_FILE} is there)")
    size = path.stat().st_size
    if size != sidecar["index_bytes"] or _sha256(path) != sidecar["index_sha256"]:
        raise VectorIndexError(
            f"{path} is corrupt or does not belong to its sidecar: its size ({size} bytes) or "
            f"SHA-256 differs from the recorded ({sidecar['index_bytes']} bytes)"
        )
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
    if not _has_native_ids(index):
        raise VectorIndexError(f"{path} holds an index without ids (not written by this code)")
    return index
