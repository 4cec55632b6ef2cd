"""VectorIndex search on small synthetic clustered unit vectors: exactness, ids, filters."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from indexer.vectors import gpu
from indexer.vectors.strategies import exact_top_k, search_by_overfetch
from support.vectors import BASE_ID, DIM, brute_force, build, clustered_unit_vectors, recall

# ------------------------------------------------------------------------- exact search, ids


def test_flat_search_equals_numpy_brute_force(queries: np.ndarray) -> None:
    index, vectors, ids = build("Flat")
    scores, found = index.search(queries, 10)
    want_scores, want_ids = brute_force(queries, vectors, ids, 10)
    assert found.dtype == np.int64
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(found, want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert found.min() >= BASE_ID  # the given ids, not row numbers
    assert set(index.all_ids().tolist()) == set(ids.tolist())


def test_single_query_and_k_beyond_ntotal() -> None:
    index, vectors, ids = build("Flat", n=5)
    scores, found = index.search(vectors[2], 8)  # 1-D: one query
    assert found.shape == (1, 8)
    assert found[0, 0] == ids[2]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert (found[0, 5:] == -1).all()
    assert np.isneginf(scores[0, 5:]).all()
    assert set(found[0, :5].tolist()) == set(ids.tolist())


def test_exact_top_k_breaks_ties_by_position() -> None:
    vectors = np.repeat(clustered_unit_vectors(1, DIM), 4, axis=0)  # four equal vectors
    ids = np.array([40, 10, 30, 20], dtype=np.int64)
    scores, found = exact_top_k(vectors[:1], vectors, ids, 6)
    np.testing.assert_array_equal(found[0], [40, 10, 30, 20, -1, -1])
    assert np.isneginf(scores[0, 4:]).all()


# ------------------------------------------------------------------------- filtered search


@pytest.mark.parametrize(
    ("factory", "params", "keep_every", "min_recall"),
    [
        ("Flat", {}, 9, 1.0),  # exact, inside FAISS
        ("HNSW32,Flat", {"efSearch": 64}, 9, 1.0),  # small allowed set: scored exactly
        ("HNSW8,Flat", {"efSearch": 16}, 1, 0.9),  # "allow" nearly all: selector, raised ef
        ("IVF64,Flat", {"nprobe": 2}, 9, 0.9),  # selector, nprobe raised to 2·9
        ("IVF16,PQ8x4,Refine(Flat)", {"nprobe": 4, "k_factor_rf": 8}, 9, 0.9),
    ],
)
def test_allowed_ids_restrict_the_hits(
    queries: np.ndarray,
    factory: str,
    params: dict[str, int | float],
    keep_every: int,
    min_recall: float,
) -> None:
    n = 3000
    index, vectors, ids = build(factory, n=n, params=params)
    assert index.spec.factory == factory
    rows = np.arange(n)[::keep_every] if keep_every > 1 else np.arange(n)[n // 10 :]
    allowed = ids[rows]
    unknown = np.array([1, 2, BASE_ID + 1], dtype=np.int64)  # not in the index: ignored
    scores, found = index.search(queries, 10, allowed_ids=np.concatenate([allowed, unknown]))
    assert np.isin(found, allowed).all()
    _, want = brute_force(queries, vectors[rows], allowed, 10)
    assert recall(found, want) >= min_recall
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_allowed_ids_smaller_than_k_and_unknown() -> None:
    index, vectors, ids = build("HNSW32,Flat", n=1000, params={"efSearch": 32})
    scores, found = index.search(vectors[:3], 5, allowed_ids=ids[[10, 20]])
    assert (np.sort(found[:, :2], axis=1) == np.sort(ids[[10, 20]])).all()
    assert (found[:, 2:] == -1).all()
    assert np.isneginf(scores[:, 2:]).all()
    _, none = index.search(vectors[:3], 5, allowed_ids=np.array([3], dtype=np.int64))
    assert (none == -1).all()


def test_overfetch_filters_and_reports_short_queries() -> None:
    vectors = clustered_unit_vectors(3000, DIM)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    row_ids = np.arange(3000, dtype=np.int64)
    allowed = row_ids[::50]  # 60 of 3000: the first fetch (k·50) is rarely enough
    q = clustered_unit_vectors(20, DIM, seed=3)
    _scores, found, short = search_by_overfetch(
        flat.search, q, 10, allowed, ntotal=3000, max_fetch=3000
    )
    _want_scores, want = brute_force(q, vectors[allowed], allowed, 10)
    np.testing.assert_array_equal(found, want)
    assert not short.any()
    _, _, short = search_by_overfetch(flat.search, q, 10, allowed, ntotal=3000, max_fetch=20)
    assert short.all()  # 20 hits hold < 10 allowed ones: the caller must finish these


def test_gpu_style_filtering_falls_back_to_the_cpu_selector(
    monkeypatch: pytest.MonkeyPatch, queries: np.ndarray
) -> None:
    """Without a GPU here: a CPU copy stands in for the GPU index, whose k is capped at 16."""
    index, vectors, ids = build("Flat")
    stand_in = faiss.deserialize_index(faiss.serialize_index(index._index))
    monkeypatch.setattr(index, "_gpu_index", stand_in)
    monkeypatch.setattr(gpu, "GPU_MAX_K", 16)
    rows = np.arange(2000)[::40]
    _, found = index.search(queries, 10, allowed_ids=ids[rows])
    _, want = brute_force(queries, vectors[rows], ids[rows], 10)
    np.testing.assert_array_equal(found, want)
