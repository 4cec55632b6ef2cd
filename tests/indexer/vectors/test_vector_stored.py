"""A version's raw vectors by case id: rows by binary search, cosines as by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.vectors.errors import VectorIndexError
from indexer.vectors.persistence import save_vectors
from indexer.vectors.stored import StoredVectors


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_cosines_by_case_id_match_the_stored_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((50, 8)))
    ids = rng.permutation(np.arange(100, 150)).astype(np.int64)  # not in row order
    save_vectors(tmp_path, vectors, ids)
    stored = StoredVectors.load(tmp_path)
    assert (len(stored), stored.dim) == (50, 8)
    asked = np.array([ids[7], 99, ids[0], ids[49], 10_000, -1], dtype=np.int64)
    assert stored.rows(asked).tolist() == [7, -1, 0, 49, -1, -1]
    query = unit(rng.standard_normal(8))
    got = stored.cosines(query, asked)
    np.testing.assert_allclose(got[[0, 2, 3]], vectors[[7, 0, 49]] @ query, atol=1e-6)
    assert np.isnan(got[[1, 4, 5]]).all()  # not stored: nothing to read


def test_rows_off_unit_length_are_renormalised_and_bad_folders_refused(tmp_path: Path) -> None:
    vectors = np.array([[2.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    save_vectors(tmp_path / "a", vectors, np.array([4, 3]))
    stored = StoredVectors.load(tmp_path / "a")
    np.testing.assert_allclose(stored.cosines(np.array([0.6, 0.8]), [4, 3]), [0.6, 0.8])
    assert StoredVectors(np.empty((0, 2), np.float32), np.empty(0, np.int64)).rows([1]) == [-1]
    with pytest.raises(VectorIndexError, match="not unique"):
        StoredVectors(vectors, np.array([5, 5], dtype=np.int64))
    with pytest.raises(VectorIndexError, match="stored vectors are missing"):
        StoredVectors.load(tmp_path / "nowhere")
