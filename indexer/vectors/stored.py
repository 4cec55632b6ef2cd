"""A version's raw vectors (``vectors.npy`` + ``ids.npy``) read by case id, memory-mapped.

The match probability reads the raw cosine of a query and a case, the model's own unit
embeddings before centring (:mod:`indexer.calibration`); the FAISS index holds the
centred ones. :class:`StoredVectors` maps the version's ``vectors.npy`` (nothing is read
until a row is used) and sorts its ids once, so a case id finds its row by binary search
(no per-id Python object, whatever the size of the archive).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from indexer.vectors.arrays import FloatArray, IdArray
from indexer.vectors.errors import VectorIndexError
from indexer.vectors.persistence import load_vectors


class StoredVectors:
    """The raw vectors of one version folder, by case id."""

    def __init__(self, vectors: FloatArray, ids: IdArray) -> None:
        if len(vectors) != len(ids):
            raise VectorIndexError(f"{len(vectors)} vectors but {len(ids)} ids")
        self._vectors = vectors  # (n, dim), usually a read-only memory map
        order = np.argsort(ids, kind="stable")
        self._sorted_ids: IdArray = np.ascontiguousarray(ids[order], dtype=np.int64)
        self._rows = order.astype(np.int64)
        if len(ids) > 1 and (np.diff(self._sorted_ids) == 0).any():
            raise VectorIndexError("the stored ids are not unique")

    @classmethod
    def load(cls, folder: Path) -> StoredVectors:
        """The ``vectors.npy`` + ``ids.npy`` of ``folder``, the vectors memory-mapped."""
        vectors, ids = load_vectors(Path(folder), mmap=True)
        return cls(vectors, np.asarray(ids))

    def __len__(self) -> int:
        return len(self._sorted_ids)

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def rows(self, ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The row of each case id in ``vectors.npy`` (-1 for an id not stored)."""
        wanted = np.asarray(ids, dtype=np.int64)
        if not len(self._sorted_ids):
            return np.full(wanted.shape, -1, dtype=np.int64)
        at = np.searchsorted(self._sorted_ids, wanted).clip(0, len(self._sorted_ids) - 1)
        found = self._sorted_ids[at] == wanted
        return np.where(found, self._rows[at], -1)

    def cosines(self, query: npt.ArrayLike, ids: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The cosine of the unit ``query`` (dim,) and each stored case ``ids`` (NaN for an
        id not stored); the stored rows are renormalised, as the index normalises them."""
        rows = self.rows(ids)
        out = np.full(rows.shape, np.nan, dtype=np.float64)
        present = rows >= 0
        if present.any():
            picked = np.asarray(self._vectors[rows[present]], dtype=np.float64)  # (m, dim)
            norms = np.linalg.norm(picked, axis=1)
            out[present] = (picked @ np.asarray(query, dtype=np.float64)) / norms
        return out
