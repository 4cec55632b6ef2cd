"""The store of every metadata-store test, migrated, on SQLite and on PostgreSQL
(``store_url`` in tests/indexer/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from indexer.store import MetadataStore


@pytest.fixture
def store(store_url: str) -> Iterator[MetadataStore]:
    store = MetadataStore.open(store_url)
    yield store
    store.close()
