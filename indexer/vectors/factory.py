"""Choosing an index: the ``index_factory`` string from the vector count, dimension and memory.

autofaiss-style: exact search while it is cheap, then the fastest index whose memory fits
the budget, the sizes worked out per vector from how FAISS lays each index out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from indexer.vectors.anatomy import MIN_POINTS_PER_CENTROID
from indexer.vectors.errors import VectorIndexError
from indexer.vectors.parameters import HNSW_EF_SEARCH, IVF_REFINE_K_FACTOR, default_nprobe

FLAT_MAX_VECTORS = 50_000
"""Below this many vectors :func:`choose_factory` picks exact search (≤ 12.8 M MACs a query)."""
HNSW_M = 32
IDMAP2_BYTES_PER_VECTOR = 8 + 48
"""``id_map`` entry + ``rev_map`` hash-map node and bucket (libstdc++ ``unordered_map``)."""


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


def choose_factory(n: int, dim: int, *, memory_budget_bytes: int = 8 * 2**30) -> IndexSpec:
    """Pick an index for ``n`` vectors of ``dim`` dimensions, autofaiss-style.

    1. ``n < 50,000`` → ``Flat``: exact, and a query costs < 50,000 × dim multiply-adds
       (12.8 M at 256-d: a few ms on one core).
    2. ``HNSW32,Flat`` with ``efSearch = 128`` when ``n × hnsw_bytes_per_vector(dim)`` fits
       the budget: the fastest CPU search at recall@10 ≥ 0.95, exact re-scoring for free
       (full vectors). Cannot remove ids (rebuild from
       :func:`~indexer.vectors.persistence.load_vectors`).
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


def spec_for(n: int, dim: int, factory: str | None) -> IndexSpec:
    """The index for ``n`` vectors: :func:`choose_factory`'s when ``factory`` is None, else
    ``factory`` — with :func:`choose_factory`'s search parameters if it is the same one."""
    chosen = choose_factory(n, dim)
    if factory is None:
        return chosen
    params = chosen.search_params if chosen.factory == factory else {}
    return IndexSpec(factory=factory, dim=dim, search_params=params)
