"""The store's SQL tables (SQLAlchemy 2 typed declarative models).

``collections``
    A named archive indexed with one model checkpoint (its SHA-256, path, task and labels),
    and the fingerprint of the salt its cases' group keys are hashed with.
``cases``
    One image: external id (dataset key or file path), source URI, content hash (the same
    image twice is one case), label codes, split, non-identifying metadata and a salted
    hash of the patient/lesion key (:func:`hash_group_key`, never the key itself).
``id_counter``
    One row per id sequence; :func:`indexer.store.ids.reserve_ids` bumps it atomically
    with ``UPDATE … RETURNING``, which PostgreSQL serialises with a row lock and SQLite
    with its database write lock.
``index_versions``
    Every build writes a new version folder. At most one version per collection is
    active: enforced inside :func:`indexer.store.versions.activate_version` and by a
    partial unique index (PostgreSQL and SQLite both support ``… WHERE is_active``).
``jobs``
    Background (re)index jobs with progress, heartbeat and the process running them, so a
    crashed job can be found and marked failed (:func:`indexer.store.jobs.reap_stale_jobs`).

``Base.metadata`` is the target of the Alembic migrations in ``indexer/migrations``; the
migrations are written out in full, and a test checks that they build exactly these
tables. The state and kind columns are plain strings holding the values of
:class:`~indexer.store.records.VersionState`, :class:`~indexer.store.records.JobKind` and
:class:`~indexer.store.records.JobState` (a CHECK constraint lists them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from indexer.store.records import TASKS, JobKind, JobState, VersionState


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every database.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as
    naive UTC and given ``tzinfo=UTC`` again when read. Naive datetimes are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware UTC times")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# JSON everywhere; JSONB on PostgreSQL (containment operator for label filters).
JSONType = JSON().with_variant(JSONB(), "postgresql")

NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def _in_list(values: Iterable[str]) -> str:
    return ", ".join(f"'{value}'" for value in values)


class Base(DeclarativeBase):
    """Declarative base of the store's tables (``Base.metadata`` is Alembic's target)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (CheckConstraint(f"task IN ({_in_list(TASKS)})", name="task"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    checkpoint_path: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(String(20))
    label_codes: Mapped[list[str]] = mapped_column(JSONType)
    label_names: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # group_salt_fingerprint() of the salt its group_key_hash values were made with (None:
    # not yet recorded, e.g. a collection written before revision 0002).
    group_salt_fingerprint: Mapped[str | None] = mapped_column(String(64))


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("collection_id", "content_hash"),
        UniqueConstraint("collection_id", "external_id"),
        Index("ix_cases_collection_id_split", "collection_id", "split"),
    )

    # Assigned explicitly: it is the case's FAISS id (reserve_ids).
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"))
    external_id: Mapped[str] = mapped_column(Text)
    source_uri: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    labels: Mapped[list[str]] = mapped_column(JSONType)
    split: Mapped[str] = mapped_column(String(32))
    # The column is "metadata"; the attribute cannot be (DeclarativeBase.metadata).
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType)
    group_key_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    # False: no diagnosis (e.g. a PACS instance no label table names); revision 0003.
    labelled: Mapped[bool] = mapped_column(Boolean, server_default=true())


class FollowCursor(Base):
    """Where the follower of one source stopped reading its change feed (revision 0003)."""

    __tablename__ = "follow_cursors"

    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    cursor: Mapped[str] = mapped_column(Text)  # opaque to the store: the follower's position
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class IdCounter(Base):
    __tablename__ = "id_counter"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_id: Mapped[int] = mapped_column(BigInteger)


class IndexVersion(Base):
    __tablename__ = "index_versions"
    __table_args__ = (
        UniqueConstraint("collection_id", "version"),
        CheckConstraint(f"state IN ({_in_list(VersionState)})", name="state"),
        # At most one active version per collection.
        Index(
            "ux_index_versions_one_active",
            "collection_id",
            unique=True,
            postgresql_where=text("is_active"),
            sqlite_where=text("is_active"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id"))
    version: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    factory: Mapped[str] = mapped_column(String(200))
    vector_count: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))  # a VersionState
    is_active: Mapped[bool] = mapped_column(Boolean)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"kind IN ({_in_list(JobKind)})", name="kind"),
        CheckConstraint(f"state IN ({_in_list(JobState)})", name="state"),
        Index("ix_jobs_collection_id_state", "collection_id", "state"),
        Index("ix_jobs_state", "state"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    collection_id: Mapped[int | None] = mapped_column(ForeignKey("collections.id"))
    kind: Mapped[str] = mapped_column(String(16))  # a JobKind
    state: Mapped[str] = mapped_column(String(16))  # a JobState
    progress: Mapped[float] = mapped_column(Float)
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType)
    errors: Mapped[list[str]] = mapped_column(JSONType)
    message: Mapped[str] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
