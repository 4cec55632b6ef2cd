"""Fixtures of the vector index tests: one FAISS thread, and queries from the data's clusters."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import pytest

from support.vectors import DIM, clustered_unit_vectors


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
