"""choose_factory: the index picked for a size and memory budget, and HNSW's default recall."""

from __future__ import annotations

import faiss
import pytest

from indexer.vectors.errors import VectorIndexError
from indexer.vectors.factory import IndexSpec, choose_factory, pq_subquantizers, spec_for
from indexer.vectors.index import VectorIndex
from indexer.vectors.parameters import HNSW_EF_SEARCH
from indexer.vectors.strategies import exact_top_k
from support.vectors import CHECKPOINT, case_ids, clustered_unit_vectors, recall


def test_choose_factory() -> None:
    assert choose_factory(10_000, 256) == IndexSpec("Flat", 256, {})
    large = choose_factory(1_000_000, 256)
    assert large == IndexSpec("HNSW32,Flat", 256, {"efSearch": HNSW_EF_SEARCH})
    tight = choose_factory(1_000_000, 256, memory_budget_bytes=1 * 2**30)
    assert tight == IndexSpec("IVF4096,PQ64x8,Refine(SQ8)", 256, {"nprobe": 64, "k_factor_rf": 8})
    tighter = choose_factory(1_000_000, 256, memory_budget_bytes=200 * 2**20)
    assert tighter.factory == "IVF4096,PQ64x8"
    with pytest.raises(VectorIndexError, match="memory budget"):
        choose_factory(1_000_000, 256, memory_budget_bytes=2**20)
    assert choose_factory(200_000, 384, memory_budget_bytes=2**28).factory.startswith(
        "IVF2048,PQ64x8"
    )
    assert pq_subquantizers(100) == 25
    assert pq_subquantizers(768) == 64
    for spec in (tight, tighter):  # the strings are valid FAISS factories
        faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)


def test_spec_for_a_named_factory_keeps_the_chosen_parameters_only_when_it_matches() -> None:
    assert spec_for(1_000_000, 256, None) == choose_factory(1_000_000, 256)
    assert spec_for(1_000_000, 256, "HNSW32,Flat").search_params == {"efSearch": HNSW_EF_SEARCH}
    assert spec_for(1_000_000, 256, "IVF1024,Flat") == IndexSpec("IVF1024,Flat", 256, {})
    assert spec_for(10, 8, "HNSW32,Flat") == IndexSpec("HNSW32,Flat", 8, {})


def test_hnsw_default_recall_against_exact() -> None:
    """recall@10 of HNSW32 at the default efSearch vs exact search, 20k clustered vectors.

    The data are hard enough that FAISS's own default (efSearch 16) misses the goal.
    """
    n, dim = 20_000, 128
    vectors = clustered_unit_vectors(n, dim, clusters=20, seed=5)
    ids = case_ids(n)
    index = VectorIndex.build(
        vectors, ids, choose_factory(1_000_000, dim), checkpoint_sha256=CHECKPOINT
    )
    assert index.spec.factory == "HNSW32,Flat"
    q = clustered_unit_vectors(200, dim, clusters=20, seed=6)
    _, truth = exact_top_k(q, vectors, ids, 10)
    assert recall(index.search(q, 10)[1], truth) >= 0.95
    index.set_search_params({"efSearch": 16})
    assert recall(index.search(q, 10)[1], truth) < 0.95
