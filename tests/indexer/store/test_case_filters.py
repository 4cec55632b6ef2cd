"""Filtering a collection's cases by label, split and metadata, in SQL."""

from __future__ import annotations

import pytest

from indexer.store import MetadataStore, StoreError
from support.store import add_cases, case_row, make_collection


def test_case_ids_matching_label_split_and_metadata(store: MetadataStore) -> None:
    coll = make_collection(store)
    ids = store.reserve_ids(4)
    add_cases(
        store,
        coll.id,
        case_row(ids[0], "a", labels=["MEL"], split="train", meta={"modality": "derm", "age": 45}),
        case_row(ids[1], "b", labels=["NV", "MEL"], split="test", meta={"modality": "xr"}),
        case_row(ids[2], "c", labels=["NV"], split="train", meta={"modality": "derm"}),
        case_row(ids[3], "d", meta={"dermoscopic": True}),
    )
    other = make_collection(store, "other")
    (other_id,) = store.reserve_ids(1)
    add_cases(store, other.id, case_row(other_id, "a", labels=["MEL"], split="train"))

    def matching(**filters: str) -> list[int]:
        return store.case_ids_matching(coll.id, filters)

    assert matching() == ids
    assert matching(label="MEL") == [ids[0], ids[1]]
    assert matching(label="NV", split="train") == [ids[2]]
    assert matching(split="test") == [ids[1]]
    assert matching(modality="derm") == [ids[0], ids[2]]
    assert matching(modality="derm", label="MEL", split="train") == [ids[0]]
    assert matching(age="45") == [ids[0]]  # non-string values compare as their JSON text
    assert matching(dermoscopic="true") == [ids[3]]
    assert matching(label="BCC") == []
    assert matching(modality="ct") == []
    assert matching(nonexistent_key="x") == []
    with pytest.raises(StoreError, match="metadata filter key"):
        matching(**{"bad'key": "x"})
