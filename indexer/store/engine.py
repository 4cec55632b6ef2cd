"""The store's engine and sessions: the URL, SQLite's tuning and the two kinds of transaction.

``url`` is a SQLAlchemy URL: ``sqlite:///path/to/medret.db`` or
``postgresql+psycopg://user@host/db`` (a bare ``postgresql://`` uses psycopg too).

Transactions: a *write* transaction (:func:`write_sessions`) on SQLite starts with
``BEGIN IMMEDIATE``, taking the database write lock up front so that read-then-write
transactions never fail with "database is locked" (keep it short); reads begin with a
plain ``BEGIN``. SQLite connections use WAL, foreign keys and a busy timeout. On
PostgreSQL both are ordinary transactions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
_SQLITE_BEGIN_OPTION: Final = "medret_sqlite_begin"


def normalise_url(url: str) -> URL:
    """Parse ``url``; a bare ``postgresql://`` gets the psycopg (3) driver."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def display_url(url: URL) -> str:
    """The URL with any password masked, for messages and logs."""
    return url.render_as_string(hide_password=True)


def create_store_engine(url: URL) -> Engine:
    """An engine for ``url``: pre-pinged connections on PostgreSQL; on SQLite the tuning
    of the module doc (and a file database's missing parent folder is created)."""
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    in_memory = url.database in (None, "", ":memory:")
    if not in_memory:
        Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        # An in-memory database exists once per connection: share one.
        poolclass=StaticPool if in_memory else None,
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def for_writing(engine: Engine) -> Engine:
    """``engine`` whose transactions are write transactions (``BEGIN IMMEDIATE`` on SQLite)."""
    return engine.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"})


def read_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for reads; their objects stay readable after the session ends."""
    return sessionmaker(engine, expire_on_commit=False)


def write_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions for write transactions (:func:`for_writing`)."""
    return sessionmaker(for_writing(engine), expire_on_commit=False)


def _on_sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    """WAL, foreign keys and a busy timeout; BEGIN is emitted by us (``_on_sqlite_begin``)."""
    # Hand transaction control to SQLAlchemy (sqlite3's legacy mode does not BEGIN before
    # SELECT or DDL, which breaks isolation and transactional migrations).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    """``BEGIN`` for reads, ``BEGIN IMMEDIATE`` for write transactions (module doc)."""
    immediate = conn.get_execution_options().get(_SQLITE_BEGIN_OPTION) == "IMMEDIATE"
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
