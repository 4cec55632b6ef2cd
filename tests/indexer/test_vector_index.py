"""VectorIndex on small synthetic clustered unit vectors: exactness, filters, files, errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer import vector_index as vx
from indexer.vector_index import (
    HNSW_EF_SEARCH,
    IndexSpec,
    VectorIndex,
    VectorIndexError,
    choose_factory,
    exact_top_k,
    load_vectors,
    save_vectors,
    search_by_overfetch,
)

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
    vectors = clustered_unit_vectors(n, DIM)
    ids = case_ids(n)
    index = VectorIndex.build(
        vectors, ids, IndexSpec(factory, DIM, params or {}), checkpoint_sha256=CHECKPOINT
    )
    return index, vectors, ids


def brute_force(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    scores = queries.astype(np.float64) @ vectors.T.astype(np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread() -> Iterator[None]:
    """One OpenMP thread: on a busy machine FAISS's parallel regions wait for descheduled
    threads (k-means training took 1–6 s instead of 0.3 s); results do not depend on it."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return clustered_unit_vectors(25, DIM, seed=1)


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
    monkeypatch.setattr(vx, "GPU_MAX_K", 16)
    rows = np.arange(2000)[::40]
    _, found = index.search(queries, 10, allowed_ids=ids[rows])
    _, want = brute_force(queries, vectors[rows], ids[rows], 10)
    np.testing.assert_array_equal(found, want)


# ------------------------------------------------------------------------- files


def test_save_load_round_trip_and_sidecar(tmp_path: Path, queries: np.ndarray) -> None:
    index, _, ids = build("HNSW32,Flat", n=1500, params={"efSearch": 40})
    index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.faiss", "index.json"]
    sidecar = json.loads((tmp_path / "index.json").read_text())
    assert sidecar["checkpoint_sha256"] == CHECKPOINT
    assert sidecar["dim"] == DIM
    assert sidecar["vector_count"] == 1500
    assert sidecar["factory"] == sidecar["factory_requested"] == "HNSW32,Flat"
    assert sidecar["search_params"] == {"efSearch": 40}
    assert sidecar["fallback_reason"] is None
    assert sidecar["faiss_version"] == faiss.__version__
    assert sidecar["build_seconds"] >= 0
    assert sidecar["format_version"] == 1
    created = dt.datetime.fromisoformat(sidecar["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    digest = hashlib.sha256((tmp_path / "index.faiss").read_bytes()).hexdigest()
    assert sidecar["index_sha256"] == digest

    loaded = VectorIndex.load(tmp_path, expected_checkpoint_sha256=CHECKPOINT)
    assert loaded.spec == index.spec
    assert loaded.ntotal == 1500
    assert loaded.checkpoint_sha256 == CHECKPOINT
    np.testing.assert_array_equal(loaded.all_ids(), index.all_ids())
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    allowed = ids[:100]
    np.testing.assert_array_equal(
        loaded.search(queries, 5, allowed_ids=allowed)[1],
        index.search(queries, 5, allowed_ids=allowed)[1],
    )


def test_checkpoint_mismatch_is_refused(tmp_path: Path) -> None:
    index, _, _ = build("Flat", n=50)
    index.save(tmp_path)
    other = "de" * 32
    with pytest.raises(VectorIndexError, match=r"built with checkpoint a1a1.*query model is dede"):
        VectorIndex.load(tmp_path, expected_checkpoint_sha256=other)


def test_missing_or_corrupt_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VectorIndexError, match=r"index\.json is missing"):
        VectorIndex.load(tmp_path / "nowhere")
    index, _, _ = build("Flat", n=50)
    index.save(tmp_path)
    index_file = tmp_path / "index.faiss"
    good = index_file.read_bytes()

    index_file.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(VectorIndexError, match="corrupt"):
        VectorIndex.load(tmp_path)

    garbage = bytes(len(good))  # same size, zeros; the sidecar is made to agree with it
    index_file.write_bytes(garbage)
    sidecar_file = tmp_path / "index.json"
    sidecar = json.loads(sidecar_file.read_text())
    sidecar["index_sha256"] = hashlib.sha256(garbage).hexdigest()
    sidecar_file.write_text(json.dumps(sidecar))
    with pytest.raises(VectorIndexError, match="FAISS cannot read"):
        VectorIndex.load(tmp_path)

    index_file.unlink()
    with pytest.raises(VectorIndexError, match=r"index\.faiss is missing"):
        VectorIndex.load(tmp_path)

    sidecar_file.write_text("{not json")
    with pytest.raises(VectorIndexError, match="not readable JSON"):
        VectorIndex.load(tmp_path)


def test_sidecar_that_disagrees_with_the_file_is_refused(tmp_path: Path) -> None:
    index, _, _ = build("Flat", n=50)
    index.save(tmp_path)
    sidecar_file = tmp_path / "index.json"
    sidecar = json.loads(sidecar_file.read_text())
    sidecar["vector_count"] = 51
    sidecar_file.write_text(json.dumps(sidecar))
    with pytest.raises(VectorIndexError, match="vector count 50 does not match"):
        VectorIndex.load(tmp_path)


def test_vectors_round_trip(tmp_path: Path) -> None:
    vectors = clustered_unit_vectors(30, DIM)
    ids = case_ids(30)
    save_vectors(tmp_path, vectors, ids)
    got_vectors, got_ids = load_vectors(tmp_path)
    np.testing.assert_array_equal(got_vectors, vectors)
    np.testing.assert_array_equal(got_ids, ids)
    mapped, _ = load_vectors(tmp_path, mmap=True)
    np.testing.assert_array_equal(mapped, vectors)
    assert not list(tmp_path.glob("*.tmp"))
    np.save(tmp_path / "ids.npy", ids[:-1])
    with pytest.raises(VectorIndexError, match="does not match 30 stored vectors"):
        load_vectors(tmp_path)
    (tmp_path / "vectors.npy").unlink()
    with pytest.raises(VectorIndexError, match=r"vectors\.npy does not exist"):
        load_vectors(tmp_path)


# ------------------------------------------------------------------------- validation


def test_dimension_mismatch_is_refused(queries: np.ndarray) -> None:
    index, vectors, ids = build("Flat", n=50)
    with pytest.raises(VectorIndexError, match="dimension mismatch: queries have 16"):
        index.search(queries[:, :16], 5)
    with pytest.raises(VectorIndexError, match="dimension mismatch"):
        VectorIndex.build(vectors, ids, IndexSpec("Flat", DIM + 1), checkpoint_sha256=CHECKPOINT)


def test_bad_inputs_are_refused() -> None:
    vectors = clustered_unit_vectors(10, DIM)
    ids = case_ids(10)
    spec = IndexSpec("Flat", DIM)
    bad = vectors.copy()
    bad[3, 0] = np.nan
    with pytest.raises(VectorIndexError, match="NaN"):
        VectorIndex.build(bad, ids, spec, checkpoint_sha256=CHECKPOINT)
    with pytest.raises(VectorIndexError, match="unique"):
        VectorIndex.build(vectors, np.zeros(10, np.int64), spec, checkpoint_sha256=CHECKPOINT)
    with pytest.raises(VectorIndexError, match="non-negative"):
        VectorIndex.build(vectors, ids - BASE_ID - 1, spec, checkpoint_sha256=CHECKPOINT)
    with pytest.raises(VectorIndexError, match="unknown or invalid index factory"):
        VectorIndex.build(
            vectors, ids, IndexSpec("IVF12,Nonsense", DIM), checkpoint_sha256=CHECKPOINT
        )
    with pytest.raises(VectorIndexError, match="efSearch=8 does not apply"):
        VectorIndex.build(
            vectors, ids, IndexSpec("Flat", DIM, {"efSearch": 8}), checkpoint_sha256=CHECKPOINT
        )


def test_non_unit_vectors_are_normalised_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    vectors = clustered_unit_vectors(20, DIM)
    scaled = vectors * 3
    with caplog.at_level(logging.WARNING, logger="indexer.vector_index"):
        index = VectorIndex.build(
            scaled, case_ids(20), IndexSpec("Flat", DIM), checkpoint_sha256=CHECKPOINT
        )
    assert "not unit length" in caplog.text
    np.testing.assert_array_equal(scaled, vectors * 3)  # the caller's array is untouched
    scores, _ = index.search(vectors[:2], 1)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


# ------------------------------------------------------------------------- small archives


def test_empty_index_returns_no_hits(tmp_path: Path) -> None:
    empty = np.empty((0, DIM), np.float32)
    index = VectorIndex.build(
        empty, np.empty(0, np.int64), IndexSpec("Flat", DIM), checkpoint_sha256=CHECKPOINT
    )
    scores, found = index.search(clustered_unit_vectors(2, DIM), 3)
    assert (found == -1).all()
    assert np.isneginf(scores).all()
    index.save(tmp_path)
    assert VectorIndex.load(tmp_path).ntotal == 0
    ivf = VectorIndex.build(
        empty, np.empty(0, np.int64), IndexSpec("IVF64,Flat", DIM), checkpoint_sha256=CHECKPOINT
    )
    assert ivf.spec.factory == "Flat"
    assert ivf.ntotal == 0
    assert ivf.sidecar["fallback_reason"]


def test_too_few_vectors_to_train_fall_back_to_flat(
    caplog: pytest.LogCaptureFixture, queries: np.ndarray
) -> None:
    with caplog.at_level(logging.WARNING, logger="indexer.vector_index"):
        index, vectors, ids = build("IVF256,Flat", n=1000, params={"nprobe": 8})
    assert index.spec == IndexSpec("Flat", DIM, {})
    sidecar = index.sidecar
    assert sidecar["factory_requested"] == "IVF256,Flat"
    assert sidecar["search_params_requested"] == {"nprobe": 8}
    assert "9984" in sidecar["fallback_reason"]  # 39 × 256 centroids
    assert "Flat index instead" in caplog.text
    _, found = index.search(queries, 5)
    np.testing.assert_array_equal(found, brute_force(queries, vectors, ids, 5)[1])


# ------------------------------------------------------------------------- add and remove


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_remove_and_add(factory: str) -> None:
    index, vectors, ids = build(factory, n=1000, params={"nprobe": 16} if "IVF" in factory else {})
    gone = ids[:100]
    assert index.remove(np.concatenate([gone, [5]])) == 100  # 5 is unknown
    assert index.ntotal == 900
    assert set(index.all_ids().tolist()) == set(ids[100:].tolist())
    _, found = index.search(vectors[:100], 3)
    assert not np.isin(found, gone).any()
    assert index.remove(np.empty(0, np.int64)) == 0

    index.add(vectors[:10], gone[:10])
    _, found = index.search(vectors[:10], 1)
    np.testing.assert_array_equal(found[:, 0], gone[:10])
    with pytest.raises(VectorIndexError, match="already in the index"):
        index.add(vectors[:1], ids[500:501])


def test_hnsw_cannot_remove() -> None:
    index, _, ids = build("HNSW32,Flat", n=200)
    with pytest.raises(VectorIndexError, match="cannot remove vectors; rebuild"):
        index.remove(ids[:1])
    assert index.ntotal == 200


# ------------------------------------------------------------------------- choosing an index


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
    assert vx.pq_subquantizers(100) == 25
    assert vx.pq_subquantizers(768) == 64
    for spec in (tight, tighter):  # the strings are valid FAISS factories
        faiss.index_factory(spec.dim, spec.factory, faiss.METRIC_INNER_PRODUCT)


def test_omitted_search_params_get_the_defaults() -> None:
    hnsw, _, _ = build("HNSW32,Flat", n=300)
    assert hnsw.spec.search_params == {"efSearch": HNSW_EF_SEARCH}
    assert hnsw.sidecar["search_params_requested"] == {}
    ivf, _, _ = build("IVF64,PQ8x4,Refine(Flat)", n=3000, params={"nprobe": 3})
    assert ivf.spec.search_params == {"nprobe": 3, "k_factor_rf": 8}


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
