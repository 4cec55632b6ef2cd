"""Index versions: every build writes a new numbered version; at most one is active.

Functions over a caller's :class:`~sqlalchemy.orm.Session`. Version changes of one
collection are serialised by locking its row (:func:`indexer.store.collections.lock_collection`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from indexer.store.collections import lock_collection
from indexer.store.errors import StoreError
from indexer.store.records import VersionInfo, VersionState, record_from_row
from indexer.store.tables import IndexVersion, utcnow

log = logging.getLogger(__name__)


def version_info(row: IndexVersion) -> VersionInfo:
    """The record of an ``index_versions`` row."""
    return record_from_row(VersionInfo, row, state=VersionState(row.state), params=dict(row.params))


def next_version_number(session: Session, collection_id: int) -> int:
    """One more than the collection's newest version number (1 for the first)."""
    newest = session.scalar(
        select(func.max(IndexVersion.version)).where(IndexVersion.collection_id == collection_id)
    )
    return int(newest or 0) + 1


def create_version(
    session: Session,
    collection_id: int,
    *,
    path: str,
    checkpoint_sha256: str,
    factory: str,
    params: Mapping[str, Any],
) -> VersionInfo:
    """A new "building" version numbered :func:`next_version_number` at creation."""
    lock_collection(session, collection_id)
    row = IndexVersion(
        collection_id=collection_id,
        version=next_version_number(session, collection_id),
        path=path,
        checkpoint_sha256=checkpoint_sha256,
        factory=factory,
        vector_count=0,
        state=VersionState.BUILDING,
        is_active=False,
        params=dict(params),
        message="",
        created_at=utcnow(),
        completed_at=None,
    )
    session.add(row)
    session.flush()
    return version_info(row)


def activate_version(session: Session, version_id: int, vector_count: int) -> None:
    """Make the version ready and the collection's only active one, in the caller's
    transaction (a rollback leaves the previous version active)."""
    row = session.get(IndexVersion, version_id)
    if row is None:
        raise StoreError(f"index version id {version_id} does not exist")
    lock_collection(session, row.collection_id)
    session.refresh(row)  # the state as of the lock
    if row.state not in (VersionState.BUILDING, VersionState.READY):
        raise StoreError(
            f"index version {row.version} is {row.state}; only a building or ready version "
            "can be activated"
        )
    session.execute(
        update(IndexVersion)
        .where(
            IndexVersion.collection_id == row.collection_id,
            IndexVersion.is_active,
            IndexVersion.id != version_id,
        )
        .values(is_active=False)
        .execution_options(synchronize_session=False)
    )
    row.state = VersionState.READY
    row.is_active = True
    row.vector_count = vector_count
    row.completed_at = row.completed_at or utcnow()
    session.flush()
    log.info(
        "collection id %d: index version %d is active (%d vectors)",
        row.collection_id,
        row.version,
        vector_count,
    )


def fail_version(session: Session, version_id: int, message: str) -> None:
    """Mark a version that never became active as failed, with the reason."""
    row = session.get(IndexVersion, version_id)
    if row is None:
        raise StoreError(f"index version id {version_id} does not exist")
    if row.is_active:
        raise StoreError(f"index version {row.version} is active; it cannot fail now")
    row.state = VersionState.FAILED
    row.message = message
    row.completed_at = utcnow()


def active_version(session: Session, collection_id: int) -> VersionInfo | None:
    """The collection's active version, or ``None`` before the first completed build."""
    row = session.scalars(
        select(IndexVersion).where(
            IndexVersion.collection_id == collection_id, IndexVersion.is_active
        )
    ).one_or_none()
    return version_info(row) if row is not None else None


def list_versions(session: Session, collection_id: int) -> list[VersionInfo]:
    """All versions of the collection, oldest first."""
    rows = session.scalars(
        select(IndexVersion)
        .where(IndexVersion.collection_id == collection_id)
        .order_by(IndexVersion.version)
    )
    return [version_info(row) for row in rows]


def mark_pruned(session: Session, version_ids: Sequence[int]) -> None:
    """Record that these versions' files were deleted. The active one cannot be."""
    wanted = sorted(set(version_ids))
    if not wanted:
        return
    rows = session.scalars(select(IndexVersion).where(IndexVersion.id.in_(wanted))).all()
    missing = set(wanted) - {row.id for row in rows}
    if missing:
        raise StoreError(f"index version ids {sorted(missing)} do not exist")
    active = [row.version for row in rows if row.is_active]
    if active:
        raise StoreError(f"index version {active[0]} is active; it cannot be pruned")
    for row in rows:
        row.state = VersionState.PRUNED
