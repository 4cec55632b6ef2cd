"""Collections: an archive indexed with one model checkpoint, by name.

Functions over a caller's :class:`~sqlalchemy.orm.Session`; the caller owns the
transaction (:class:`~indexer.store.MetadataStore` opens one per call).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from indexer.store.errors import StoreError
from indexer.store.records import (
    SHA256_HEX,
    TASKS,
    CollectionInfo,
    EnsuredCollection,
    record_from_row,
)
from indexer.store.tables import Case, Collection, utcnow

log = logging.getLogger(__name__)

# What a changed checkpoint changes: the versions built with the old one are stale.
_CHECKPOINT_FIELDS: Final = ("checkpoint_sha256", "task", "label_codes", "label_names")


def collection_info(row: Collection) -> CollectionInfo:
    """The record of a ``collections`` row."""
    return record_from_row(
        CollectionInfo,
        row,
        label_codes=tuple(row.label_codes),
        label_names=tuple(row.label_names),
    )


def collection_fields(
    *,
    checkpoint_sha256: str,
    checkpoint_path: str,
    task: str,
    label_codes: Sequence[str],
    label_names: Sequence[str],
) -> dict[str, Any]:
    """The checked column values of a collection's checkpoint (:class:`StoreError` if bad)."""
    if task not in TASKS:
        raise StoreError(f"task must be one of {TASKS}, not {task!r}")
    if len(label_codes) != len(label_names):
        raise StoreError(f"{len(label_codes)} label codes but {len(label_names)} label names")
    if not SHA256_HEX.match(checkpoint_sha256):
        raise StoreError("checkpoint_sha256 must be 64 lowercase hex digits")
    return {
        "checkpoint_sha256": checkpoint_sha256,
        "checkpoint_path": checkpoint_path,
        "task": task,
        "label_codes": list(label_codes),
        "label_names": list(label_names),
    }


def ensure_collection(session: Session, name: str, wanted: dict[str, Any]) -> EnsuredCollection:
    """Create the collection, or bring an existing one's checkpoint fields up to date.

    ``wanted`` comes from :func:`collection_fields`. The result says whether it was
    ``created`` and whether the checkpoint SHA-256, task or labels ``checkpoint_changed``
    (logged as a warning: its versions are stale). A changed ``checkpoint_path`` alone
    (same file moved) is updated quietly. A concurrent creator of the same name makes the
    flush fail with an ``IntegrityError``: run it again in a new transaction, which then
    finds the row.
    """
    row = session.scalars(
        select(Collection).where(Collection.name == name).with_for_update()
    ).one_or_none()
    if row is None:
        row = Collection(name=name, created_at=utcnow(), **wanted)
        session.add(row)
        session.flush()
        log.info("created collection %r (checkpoint %s…)", name, wanted["checkpoint_sha256"][:12])
        return EnsuredCollection(**dataclasses.asdict(collection_info(row)), created=True)
    changed = [key for key in _CHECKPOINT_FIELDS if getattr(row, key) != wanted[key]]
    if changed:
        log.warning(
            "collection %r: %s changed (checkpoint %s… → %s…); its index versions were "
            "built with the old checkpoint",
            name,
            ", ".join(changed),
            row.checkpoint_sha256[:12],
            wanted["checkpoint_sha256"][:12],
        )
    for key, value in wanted.items():
        setattr(row, key, value)
    session.flush()
    return EnsuredCollection(
        **dataclasses.asdict(collection_info(row)), checkpoint_changed=bool(changed)
    )


def set_collection_checkpoint(
    session: Session, collection_id: int, *, checkpoint_sha256: str, checkpoint_path: str
) -> None:
    """Record a new checkpoint for the collection, in the caller's transaction (so a
    full reindex can switch the checkpoint and the active version together)."""
    if not SHA256_HEX.match(checkpoint_sha256):
        raise StoreError("checkpoint_sha256 must be 64 lowercase hex digits")
    done = session.execute(
        update(Collection)
        .where(Collection.id == collection_id)
        .values(checkpoint_sha256=checkpoint_sha256, checkpoint_path=checkpoint_path)
    )
    if done.rowcount == 0:  # type: ignore[attr-defined]
        raise StoreError(f"collection id {collection_id} does not exist")


def check_group_salt(
    session: Session, collection_id: int, fingerprint: str, *, adding: bool
) -> None:
    """Refuse (:class:`StoreError`) a build whose salt cannot be the one of the collection's
    hashed group keys: a salt of another fingerprint while it holds hashed keys, or
    ``adding`` hashes to keys hashed before a fingerprint was recorded (docs/indexer.md)."""
    row = session.get(Collection, collection_id)
    if row is None:
        raise StoreError(f"collection id {collection_id} does not exist")
    if row.group_salt_fingerprint == fingerprint or not _holds_group_hashes(session, row.id):
        return
    if row.group_salt_fingerprint is not None:
        raise StoreError(
            f"collection {row.name!r} holds patient/lesion keys hashed with another "
            f"MEDRET_GROUP_SALT (fingerprint {row.group_salt_fingerprint[:12]}…, this salt's "
            f"{fingerprint[:12]}…), and hashes under different salts never match: set the "
            "salt it was indexed with, or index into a new collection"
        )
    if adding:
        raise StoreError(
            f"collection {row.name!r} holds patient/lesion keys hashed before the salt was "
            "recorded; run a full reindex once (it hashes every case again with "
            "MEDRET_GROUP_SALT), then add to it"
        )


def record_group_salt(session: Session, collection_id: int, fingerprint: str) -> None:
    """Record that the collection's group keys are hashed with the salt of ``fingerprint``,
    in the transaction that writes them (checked again: :func:`check_group_salt`)."""
    lock_collection(session, collection_id)
    check_group_salt(session, collection_id, fingerprint, adding=False)
    session.execute(
        update(Collection)
        .where(Collection.id == collection_id)
        .values(group_salt_fingerprint=fingerprint)
    )


def _holds_group_hashes(session: Session, collection_id: int) -> bool:
    found = session.scalar(
        select(Case.id)
        .where(Case.collection_id == collection_id, Case.group_key_hash.is_not(None))
        .limit(1)
    )
    return found is not None


def lock_collection(session: Session, collection_id: int) -> None:
    """Serialise version changes of one collection (row lock on PostgreSQL; SQLite's
    write transactions are serial anyway)."""
    found = session.scalar(
        select(Collection.id).where(Collection.id == collection_id).with_for_update()
    )
    if found is None:
        raise StoreError(f"collection id {collection_id} does not exist")


def get_collection(session: Session, name: str) -> CollectionInfo:
    """The collection called ``name``; :class:`StoreError` if there is none."""
    row = session.scalars(select(Collection).where(Collection.name == name)).one_or_none()
    if row is not None:
        return collection_info(row)
    known = session.scalars(select(Collection.name).order_by(Collection.name)).all()
    raise StoreError(
        f"collection {name!r} does not exist"
        + (f" (known: {', '.join(known)})" if known else " (the store has none yet)")
    )


def list_collections(session: Session) -> list[CollectionInfo]:
    """All collections, by name."""
    rows = session.scalars(select(Collection).order_by(Collection.name))
    return [collection_info(row) for row in rows]
