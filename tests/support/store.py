"""Builders for the metadata-store tests: a collection, case rows and their content hashes."""

from __future__ import annotations

import hashlib
from typing import Any

from indexer.store import CaseRow, EnsuredCollection, MetadataStore

SHA_A = "a" * 64
SHA_B = "b" * 64


def make_collection(store: MetadataStore, name: str = "derm") -> EnsuredCollection:
    """A single-label collection of three skin-lesion classes, checkpoint ``SHA_A``."""
    return store.ensure_collection(
        name,
        checkpoint_sha256=SHA_A,
        checkpoint_path="/ckpt/a.safetensors",
        task="single_label",
        label_codes=["MEL", "NV", "BCC"],
        label_names=["Melanoma", "Melanocytic nevus", "Basal cell carcinoma"],
    )


def content_hash(text: str) -> str:
    """The SHA-256 hex of ``text``: a stand-in for an image's content hash."""
    return hashlib.sha256(text.encode()).hexdigest()


def case_row(case_id: int, key: str, **fields: Any) -> CaseRow:
    """A case with external id ``key``, a file URI and the content hash of ``key``."""
    return CaseRow(
        id=case_id,
        external_id=key,
        source_uri=f"file:///archive/{key}.png",
        content_hash=content_hash(key),
        **fields,
    )


def add_cases(store: MetadataStore, collection_id: int, *rows: CaseRow) -> None:
    """Insert ``rows`` into the collection in one transaction of their own."""
    with store.session() as session:
        store.add_cases(session, rows, collection_id=collection_id)
