"""Collections: created once by name, their checkpoint kept up to date."""

from __future__ import annotations

import datetime as dt

import pytest

from indexer.store import MetadataStore, StoreError
from support.store import SHA_A, SHA_B, make_collection


def test_ensure_collection_is_idempotent_and_reports_a_changed_checkpoint(
    store: MetadataStore,
) -> None:
    first = make_collection(store)
    assert first.created
    assert not first.checkpoint_changed
    again = make_collection(store)
    assert (again.id, again.created, again.checkpoint_changed) == (first.id, False, False)
    assert store.list_collections() == [store.get_collection("derm")]

    changed = store.ensure_collection(
        "derm",
        checkpoint_sha256=SHA_B,
        checkpoint_path="/ckpt/b.safetensors",
        task="single_label",
        label_codes=["MEL", "NV", "BCC"],
        label_names=["Melanoma", "Melanocytic nevus", "Basal cell carcinoma"],
    )
    assert changed.checkpoint_changed
    assert not changed.created
    assert changed.id == first.id
    stored = store.get_collection("derm")
    assert (stored.checkpoint_sha256, stored.checkpoint_path) == (SHA_B, "/ckpt/b.safetensors")
    assert stored.label_codes == ("MEL", "NV", "BCC")
    assert stored.created_at.tzinfo is not None
    assert stored.created_at.utcoffset() == dt.timedelta(0)

    with pytest.raises(StoreError, match="collection 'chest' does not exist"):
        store.get_collection("chest")
    with pytest.raises(StoreError, match="task"):
        store.ensure_collection(
            "chest",
            checkpoint_sha256=SHA_A,
            checkpoint_path="c",
            task="softmax",
            label_codes=["A"],
            label_names=["a"],
        )
