"""Case ids: handed out by the database, never auto-generated per row.

A case's primary key *is* its FAISS id, so callers reserve ids with :func:`reserve_ids`
and insert cases with those ids. The ``id_counter`` row named :data:`CASE_ID_COUNTER`
holds the next free id (the migration creates it at :data:`FIRST_CASE_ID`).
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import update
from sqlalchemy.orm import Session

from indexer.store.engine import display_url
from indexer.store.errors import StoreError
from indexer.store.tables import IdCounter

CASE_ID_COUNTER: Final = "case_id"  # the id_counter row that hands out case (= FAISS) ids
FIRST_CASE_ID: Final = 1


def reserve_ids(session: Session, n: int) -> list[int]:
    """``n`` new case ids, unique across the whole database; commit right after.

    Atomic under concurrent callers (threads or processes, SQLite or PostgreSQL): the
    counter row is bumped with one ``UPDATE … RETURNING``. Ids of a reservation whose
    cases are never inserted are simply not used.
    """
    if n < 0:
        raise ValueError(f"cannot reserve {n} ids")
    if n == 0:
        return []
    end = session.execute(
        update(IdCounter)
        .where(IdCounter.name == CASE_ID_COUNTER)
        .values(next_id=IdCounter.next_id + n)
        .returning(IdCounter.next_id)
    ).scalar_one_or_none()
    if end is None:
        raise StoreError(
            f"the id counter is missing from {display_url(session.get_bind().engine.url)}; "
            "is the database migrated?"
        )
    return list(range(end - n, end))
