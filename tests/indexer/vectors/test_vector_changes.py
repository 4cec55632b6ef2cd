"""VectorIndex.add and .remove: ids leave and join the index; HNSW refuses removal."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.vectors.errors import VectorIndexError
from support.vectors import build


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
