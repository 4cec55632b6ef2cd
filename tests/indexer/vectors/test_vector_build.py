"""VectorIndex.build: input checks, normalisation, small archives, default search parameters."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from indexer.vectors.errors import VectorIndexError
from indexer.vectors.factory import IndexSpec
from indexer.vectors.index import VectorIndex
from indexer.vectors.parameters import HNSW_EF_SEARCH
from support.vectors import (
    BASE_ID,
    CHECKPOINT,
    DIM,
    brute_force,
    build,
    case_ids,
    clustered_unit_vectors,
)

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
    with caplog.at_level(logging.WARNING, logger="indexer.vectors"):
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
    with caplog.at_level(logging.WARNING, logger="indexer.vectors"):
        index, vectors, ids = build("IVF256,Flat", n=1000, params={"nprobe": 8})
    assert index.spec == IndexSpec("Flat", DIM, {})
    sidecar = index.sidecar
    assert sidecar["factory_requested"] == "IVF256,Flat"
    assert sidecar["search_params_requested"] == {"nprobe": 8}
    assert "9984" in sidecar["fallback_reason"]  # 39 × 256 centroids
    assert "Flat index instead" in caplog.text
    _, found = index.search(queries, 5)
    np.testing.assert_array_equal(found, brute_force(queries, vectors, ids, 5)[1])


# ------------------------------------------------------------------------- search parameters


def test_omitted_search_params_get_the_defaults() -> None:
    hnsw, _, _ = build("HNSW32,Flat", n=300)
    assert hnsw.spec.search_params == {"efSearch": HNSW_EF_SEARCH}
    assert hnsw.sidecar["search_params_requested"] == {}
    ivf, _, _ = build("IVF64,PQ8x4,Refine(Flat)", n=3000, params={"nprobe": 3})
    assert ivf.spec.search_params == {"nprobe": 3, "k_factor_rf": 8}
