"""Cases: one image each, keyed by its FAISS id, inserted, updated, read and deleted in bulk.

Functions over a caller's :class:`~sqlalchemy.orm.Session`; those that write take part in
the caller's transaction. A case's id comes from :func:`indexer.store.ids.reserve_ids`.
Lists of ids are sent in chunks of :data:`IN_CHUNK` (one query each), below SQLite's and
PostgreSQL's limits on bound parameters. Filtering cases by label, split and metadata is
:mod:`indexer.store.case_filters`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archives.privacy import is_identifying_key
from indexer.store.errors import StoreError
from indexer.store.records import SHA256_HEX, CaseInfo, CaseRow, record_from_row
from indexer.store.tables import Case, utcnow

IN_CHUNK: Final = 10_000  # ids per IN (…) list: below SQLite's and PostgreSQL's bind limits


def case_info(row: Case) -> CaseInfo:
    """The record of a ``cases`` row."""
    return record_from_row(CaseInfo, row, labels=tuple(row.labels), meta=dict(row.meta))


def add_cases(session: Session, rows: Sequence[CaseRow], *, collection_id: int) -> None:
    """Insert cases into the collection, in the caller's transaction.

    A duplicate content hash, external id or case id is a :class:`StoreError` saying
    which; the caller's transaction is then unusable and must be rolled back (leaving
    the ``with store.session()`` block with the exception does that).
    """
    if not rows:
        return
    for row in rows:
        _check_case_row(row)
    now = utcnow()
    values = [
        {**_case_values(row), "collection_id": collection_id, "created_at": now} for row in rows
    ]
    try:
        session.execute(insert(Case), values)
    except IntegrityError as exc:
        raise StoreError(
            _integrity_message(exc, f"add {len(rows)} cases to collection {collection_id}")
        ) from exc


def update_cases(session: Session, rows: Sequence[CaseRow]) -> None:
    """Overwrite stored cases (matched by id) with ``rows``, in the caller's transaction."""
    if not rows:
        return
    for row in rows:
        _check_case_row(row)
    ids = [row.id for row in rows]
    found = 0
    for chunk in chunks(ids):
        found += session.scalar(select(func.count()).where(Case.id.in_(chunk))) or 0
    if found != len(set(ids)):
        raise StoreError(f"cannot update cases: {len(set(ids)) - found} of them do not exist")
    try:
        session.execute(update(Case), [_case_values(row) for row in rows])
    except IntegrityError as exc:
        raise StoreError(_integrity_message(exc, f"update {len(rows)} cases")) from exc


def delete_cases(session: Session, ids: Sequence[int]) -> int:
    """Delete cases by id in the caller's transaction; returns how many existed."""
    deleted = 0
    for chunk in chunks(sorted(set(ids))):
        result = session.execute(
            delete(Case).where(Case.id.in_(chunk)).execution_options(synchronize_session=False)
        )
        deleted += result.rowcount  # type: ignore[attr-defined]
    return deleted


def get_case(session: Session, case_id: int) -> CaseInfo | None:
    """The case with this id, or ``None``."""
    row = session.get(Case, case_id)
    return case_info(row) if row is not None else None


def get_cases(session: Session, ids: Sequence[int]) -> dict[int, CaseInfo]:
    """Case id → case for the ids that exist (one query per 10,000 ids)."""
    found: dict[int, CaseInfo] = {}
    for chunk in chunks(sorted(set(ids))):
        for row in session.scalars(select(Case).where(Case.id.in_(chunk))):
            found[row.id] = case_info(row)
    return found


def find_case_ids(
    session: Session,
    collection_id: int,
    *,
    external_ids: Sequence[str] = (),
    case_ids: Sequence[int] = (),
) -> list[int]:
    """Ids of the collection's cases whose external id or case id is one of those given
    (sorted; unknown ones are left out)."""
    found: set[int] = set()
    in_collection = Case.collection_id == collection_id
    for chunk in chunks(sorted(set(external_ids))):
        found.update(
            session.scalars(select(Case.id).where(in_collection, Case.external_id.in_(chunk)))
        )
    for case_chunk in chunks(sorted(set(case_ids))):
        found.update(session.scalars(select(Case.id).where(in_collection, Case.id.in_(case_chunk))))
    return sorted(found)


def existing_hashes(session: Session, collection_id: int) -> dict[str, int]:
    """Content hash → case id for every case of the collection."""
    rows = session.execute(
        select(Case.content_hash, Case.id).where(Case.collection_id == collection_id)
    )
    return {content_hash: case_id for content_hash, case_id in rows}


def external_ids(
    session: Session, collection_id: int, among: Sequence[str] | None = None
) -> list[str]:
    """The external ids of every case of the collection, or only those of ``among`` that
    are (looked up in chunks: a follower asking about a few new instances does not read a
    million ids)."""
    in_collection = Case.collection_id == collection_id
    if among is None:
        return list(session.scalars(select(Case.external_id).where(in_collection)))
    found: list[str] = []
    for chunk in chunks(sorted(set(among))):
        found += session.scalars(
            select(Case.external_id).where(in_collection, Case.external_id.in_(chunk))
        )
    return found


def count_cases(session: Session, collection_id: int) -> int:
    """How many cases the collection holds."""
    count = session.scalar(
        select(func.count()).select_from(Case).where(Case.collection_id == collection_id)
    )
    return int(count or 0)


def case_diagnoses(session: Session, collection_id: int) -> list[tuple[int, tuple[str, ...], bool]]:
    """(case id, labels, labelled) of every case of the collection, by id."""
    rows = session.execute(
        select(Case.id, Case.labels, Case.labelled)
        .where(Case.collection_id == collection_id)
        .order_by(Case.id)
    )
    return [(int(i), tuple(labels), bool(labelled)) for i, labels, labelled in rows]


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    """``values`` in consecutive slices of at most ``size``."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _check_case_row(row: CaseRow) -> None:
    if not SHA256_HEX.match(row.content_hash):
        raise StoreError(f"case {row.id}: content_hash must be 64 lowercase hex digits (SHA-256)")
    if row.group_key_hash is not None and not SHA256_HEX.match(row.group_key_hash):
        raise StoreError(
            f"case {row.id}: group_key_hash must be hash_group_key(key, salt), never the key"
        )
    for key in row.meta:
        if is_identifying_key(key):
            raise StoreError(
                f"case {row.id}: metadata key {key!r} holds a direct identifier; the store "
                "keeps no patient names or ids"
            )


def _case_values(row: CaseRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "external_id": row.external_id,
        "source_uri": row.source_uri,
        "content_hash": row.content_hash,
        "labels": list(row.labels),
        "split": row.split,
        "meta": dict(row.meta),
        "group_key_hash": row.group_key_hash,
        "labelled": row.labelled,
    }


def _integrity_message(exc: IntegrityError, what: str) -> str:
    """A readable reason for a constraint violation on ``cases``."""
    detail = " ".join(str(exc.orig).split())
    lowered = detail.lower()
    if "content_hash" in lowered:
        reason = (
            "a case with the same content hash is already in the collection (the same image "
            "twice is one case; skip the hashes existing_hashes() returns)"
        )
    elif "external_id" in lowered:
        reason = "a case with the same external id is already in the collection"
    elif "pk_cases" in lowered or "cases.id" in lowered:
        reason = "a case with the same id already exists (take ids from reserve_ids())"
    elif "foreign key" in lowered:
        reason = "the collection does not exist"
    else:
        reason = "a database constraint was violated"
    return f"cannot {what}: {reason} [{detail}]"
