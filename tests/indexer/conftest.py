"""Indexer fixtures: a metadata-store URL on SQLite and on PostgreSQL, and the store on it.

The PostgreSQL cases need a server: set ``MEDRET_TEST_POSTGRES_URL`` to a database the
tests may connect to as a user allowed to create databases, e.g. from a throwaway cluster::

    export MEDRET_TEST_POSTGRES_URL=$(scripts/pg_throwaway.sh start /tmp/medret-pg 54329)
    pytest tests/indexer/store
    scripts/pg_throwaway.sh stop /tmp/medret-pg

Without it they are skipped, except when ``CI`` is set: then they fail, so CI can never
pass while silently skipping PostgreSQL. Each PostgreSQL test gets a database of its own,
created from the maintenance connection and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from indexer.store import MetadataStore

POSTGRES_URL_ENV = "MEDRET_TEST_POSTGRES_URL"


def postgres_base_url() -> str:
    """The server URL from the environment; skip (or fail under CI) when it is unset."""
    url = os.environ.get(POSTGRES_URL_ENV, "").strip()
    if url:
        return url
    reason = (
        f"{POSTGRES_URL_ENV} is not set; start a server with "
        "'scripts/pg_throwaway.sh start DIR PORT' and export the URL it prints"
    )
    if os.environ.get("CI"):
        pytest.fail(
            f"CI is set, so the PostgreSQL store tests must run, but {reason}", pytrace=False
        )
    pytest.skip(reason)


def fresh_postgres_database(base_url: str) -> Iterator[str]:
    """Create a uniquely named database on the server of ``base_url``; yield its URL; drop it."""
    base = make_url(base_url)
    name = f"medret_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for one test: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from fresh_postgres_database(postgres_base_url())


@pytest.fixture
def store(store_url: str) -> Iterator[MetadataStore]:
    """The store of every metadata-store test, migrated (a module may define its own)."""
    store = MetadataStore.open(store_url)
    yield store
    store.close()
