"""Follow cursors: where the follower of one (collection, source) stopped reading its feed.

Functions over a caller's :class:`~sqlalchemy.orm.Session`. The cursor is opaque text to
the store (an Orthanc change sequence number or a QIDO poll date; :mod:`indexer.follow`
says what it means). :func:`set_cursor` is an upsert that works on SQLite and PostgreSQL:
``INSERT ... ON CONFLICT (collection_id, source) DO UPDATE``.
"""

from __future__ import annotations

from sqlalchemy import Executable, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from indexer.store.errors import StoreError
from indexer.store.tables import FollowCursor, utcnow


def get_cursor(session: Session, collection_id: int, source: str) -> str | None:
    """The stored cursor of ``source`` on the collection (``None``: never followed)."""
    return session.scalar(
        select(FollowCursor.cursor).where(
            FollowCursor.collection_id == collection_id, FollowCursor.source == source
        )
    )


def set_cursor(session: Session, collection_id: int, source: str, cursor: str) -> None:
    """Store ``cursor`` for ``source`` on the collection, replacing any earlier one."""
    values = {
        "collection_id": collection_id,
        "source": source,
        "cursor": cursor,
        "updated_at": utcnow(),
    }
    dialect = session.get_bind().dialect.name
    statement: Executable
    if dialect == "postgresql":
        pg = postgresql.insert(FollowCursor).values(values)
        statement = pg.on_conflict_do_update(
            index_elements=["collection_id", "source"],
            set_={"cursor": pg.excluded.cursor, "updated_at": pg.excluded.updated_at},
        )
    elif dialect == "sqlite":
        lite = sqlite.insert(FollowCursor).values(values)
        statement = lite.on_conflict_do_update(
            index_elements=["collection_id", "source"],
            set_={"cursor": lite.excluded.cursor, "updated_at": lite.excluded.updated_at},
        )
    else:  # pragma: no cover - the store supports these two dialects only
        raise StoreError(f"follow cursors need SQLite or PostgreSQL, not {dialect}")
    session.execute(statement)


def delete_cursor(session: Session, collection_id: int, source: str) -> bool:
    """Forget the cursor of ``source`` on the collection; whether there was one."""
    result = session.execute(
        delete(FollowCursor).where(
            FollowCursor.collection_id == collection_id, FollowCursor.source == source
        )
    )
    return bool(getattr(result, "rowcount", 0))
