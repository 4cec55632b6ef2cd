"""Id mapping: the case ids stored in a CPU index, and its search with rows mapped to ids.

FAISS ids are the SQL primary keys. Factories without native ids (Flat, HNSW, refine
stages) are wrapped in ``IndexIDMap2``; IVF indexes store ids natively and are not wrapped
(``IndexIDMap.remove_ids`` assumes the wrapped index renumbers its rows in order after a
removal, which IVF does not do). Under an IDMap, :meth:`IdMapping.search` searches the
wrapped index and maps rows to ids in numpy: ``IndexIDMap.search`` does it in an OpenMP
parallel loop, pure overhead for one query and, on busy cores, a wait for descheduled
threads (7 ms instead of 0.1 ms per HNSW query on 2 loaded cores).
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from indexer.vectors import anatomy
from indexer.vectors.arrays import FloatArray, IdArray
from indexer.vectors.errors import VectorIndexError


def stored_ids(index: Any) -> IdArray:
    """Every id stored in ``index`` (IDMap order, or inverted-list order for IVF)."""
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexIDMap):
        return np.asarray(faiss.vector_to_array(top.id_map), dtype=np.int64)
    ivf = anatomy.ivf(index)
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


class IdMapping:
    """The ids of one CPU index (cached: sorted, and row → id under an IDMap) and its search.

    Call :meth:`forget` after every add or remove.
    """

    def __init__(self, index: Any) -> None:
        self.index = index  # the owning CPU index; keeps the proxies below alive
        top = faiss.downcast_index(index)
        # the index under an IDMap (a non-owning proxy; self.index keeps it alive)
        self._wrapped: Any = top.index if isinstance(top, faiss.IndexIDMap) else None
        self._row_ids: IdArray | None = None  # row → id of the IDMap
        self._sorted_ids: IdArray | None = None

    def sorted_ids(self) -> IdArray:
        """The stored ids, sorted (for membership tests with :func:`arrays.isin_sorted`)."""
        if self._sorted_ids is None:
            self._sorted_ids = np.sort(stored_ids(self.index))
        return self._sorted_ids

    def forget(self) -> None:
        """Drop the cached ids (the index changed)."""
        self._sorted_ids = None
        self._row_ids = None

    def search(self, q: FloatArray, k: int, params: Any = None) -> tuple[FloatArray, IdArray]:
        """Search the CPU index; under an IDMap, the wrapped index, mapping rows to ids here."""
        if self._wrapped is None:
            scores, ids = self.index.search(q, k, params=params)
            return scores, ids
        scores, rows = self._wrapped.search(q, k, params=params)
        if self._row_ids is None:
            self._row_ids = stored_ids(self.index)
        ids = np.where(rows >= 0, self._row_ids[np.maximum(rows, 0)], -1)
        return scores, ids
