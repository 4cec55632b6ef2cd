"""``MetadataStore``: the store's one object, a thin front over the functions per entity.

It owns the engine and the two session factories and runs each call in a transaction of
its own, handing the session to the function of the entity module that does the work
(:mod:`~indexer.store.collections`, :mod:`~indexer.store.cases`,
:mod:`~indexer.store.case_filters`, :mod:`~indexer.store.ids`,
:mod:`~indexer.store.versions`, :mod:`~indexer.store.jobs`,
:mod:`~indexer.store.cursors`; the schema's revision is
:mod:`~indexer.store.migrations`). Methods taking a ``session`` argument work inside the
caller's transaction, opened with :meth:`MetadataStore.session`; all others run their own
short transaction (a write transaction where they write).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from indexer.group_keys import group_salt_fingerprint
from indexer.store import case_filters, cases, collections, cursors, jobs, migrations, versions
from indexer.store import ids as id_counter
from indexer.store.engine import (
    create_store_engine,
    display_url,
    normalise_url,
    read_sessions,
    write_sessions,
)
from indexer.store.records import (
    CaseInfo,
    CaseRow,
    CollectionInfo,
    EnsuredCollection,
    JobInfo,
    VersionInfo,
)


class MetadataStore:
    """Collections, cases, index versions and jobs in SQLite or PostgreSQL (package doc).

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/to/medret.db`` or
    ``postgresql+psycopg://user@host/db`` (a bare ``postgresql://`` uses psycopg too).
    The constructor only creates the engine (and a SQLite file's missing parent folder);
    :meth:`open` also migrates or checks the schema and is what callers normally use.
    """

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.engine = create_store_engine(self.url)
        self.dialect = self.engine.dialect.name
        self._reads = read_sessions(self.engine)
        self._writes = write_sessions(self.engine)

    def __repr__(self) -> str:
        return f"MetadataStore({self.display_url!r})"

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return display_url(self.url)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> MetadataStore:
        """A store on ``url`` whose schema is at the newest revision.

        With ``migrate`` the migrations run first (idempotent; concurrent openers on
        PostgreSQL wait on an advisory lock); without it an out-of-date schema is a
        :class:`StoreError`.
        """
        store = cls(url)
        try:
            if migrate:
                store.upgrade()
            else:
                store.check_schema()
        except BaseException:
            store.close()
            raise
        return store

    # ----------------------------------------------------------------- schema

    def upgrade(self) -> None:
        """Run the Alembic migrations up to head, in one transaction."""
        migrations.upgrade(self.engine)

    def current_revision(self) -> str | None:
        """The schema revision the database is at (``None``: never migrated)."""
        return migrations.current_revision(self.engine)

    def check_schema(self) -> None:
        """Raise :class:`StoreError` unless the database is at the newest revision."""
        migrations.check_schema(self.engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # ----------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends, rolled back on an exception."""
        with self._writes.begin() as session:
            yield session

    @contextlib.contextmanager
    def _read(self) -> Iterator[Session]:
        with self._reads() as session:
            yield session

    # ----------------------------------------------------------------- collections

    def ensure_collection(
        self,
        name: str,
        *,
        checkpoint_sha256: str,
        checkpoint_path: str,
        task: str,
        label_codes: Sequence[str],
        label_names: Sequence[str],
    ) -> EnsuredCollection:
        """Create the collection, or bring an existing one's checkpoint fields up to date
        (:func:`indexer.store.collections.ensure_collection`)."""
        wanted = collections.collection_fields(
            checkpoint_sha256=checkpoint_sha256,
            checkpoint_path=checkpoint_path,
            task=task,
            label_codes=label_codes,
            label_names=label_names,
        )
        for attempt in (1, 2):  # a concurrent creator may win the unique name: then update
            try:
                with self.session() as session:
                    return collections.ensure_collection(session, name, wanted)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def set_collection_checkpoint(
        self, session: Session, collection_id: int, *, checkpoint_sha256: str, checkpoint_path: str
    ) -> None:
        """Record a new checkpoint for the collection, in the caller's transaction."""
        collections.set_collection_checkpoint(
            session,
            collection_id,
            checkpoint_sha256=checkpoint_sha256,
            checkpoint_path=checkpoint_path,
        )

    def check_group_salt(self, collection_id: int, salt: str, *, adding: bool) -> None:
        """Refuse a build whose salt is not the one of the collection's hashed group keys
        (:func:`indexer.store.collections.check_group_salt`; only its fingerprint is kept)."""
        fingerprint = group_salt_fingerprint(salt)
        with self._read() as session:
            collections.check_group_salt(session, collection_id, fingerprint, adding=adding)

    def record_group_salt(self, session: Session, collection_id: int, salt: str) -> None:
        """Record the fingerprint of the salt of the group keys a build writes, in the
        caller's transaction (refused like :meth:`check_group_salt`)."""
        collections.record_group_salt(session, collection_id, group_salt_fingerprint(salt))

    def get_collection(self, name: str) -> CollectionInfo:
        """The collection called ``name``; :class:`StoreError` if there is none."""
        with self._read() as session:
            return collections.get_collection(session, name)

    def list_collections(self) -> list[CollectionInfo]:
        """All collections, by name."""
        with self._read() as session:
            return collections.list_collections(session)

    # ----------------------------------------------------------------- cases

    def reserve_ids(self, n: int) -> list[int]:
        """``n`` new case ids, unique across the whole database, in their own transaction."""
        with self.session() as session:
            return id_counter.reserve_ids(session, n)

    def existing_hashes(self, collection_id: int) -> dict[str, int]:
        """Content hash → case id for every case of the collection."""
        with self._read() as session:
            return cases.existing_hashes(session, collection_id)

    def external_ids(self, collection_id: int, among: Sequence[str] | None = None) -> list[str]:
        """The external ids of every case of the collection (or only those of ``among``)."""
        with self._read() as session:
            return cases.external_ids(session, collection_id, among)

    def add_cases(self, session: Session, rows: Sequence[CaseRow], *, collection_id: int) -> None:
        """Insert cases into the collection, in the caller's transaction."""
        cases.add_cases(session, rows, collection_id=collection_id)

    def update_cases(self, session: Session, rows: Sequence[CaseRow]) -> None:
        """Overwrite stored cases (matched by id) with ``rows``, in the caller's transaction."""
        cases.update_cases(session, rows)

    def get_case(self, case_id: int) -> CaseInfo | None:
        """The case with this id, or ``None``."""
        with self._read() as session:
            return cases.get_case(session, case_id)

    def get_cases(self, ids: Sequence[int]) -> dict[int, CaseInfo]:
        """Case id → case for the ids that exist (one query per 10,000 ids)."""
        with self._read() as session:
            return cases.get_cases(session, ids)

    def find_case_ids(
        self,
        collection_id: int,
        *,
        external_ids: Sequence[str] = (),
        case_ids: Sequence[int] = (),
    ) -> list[int]:
        """Ids of the collection's cases whose external id or case id is one of those given
        (sorted; unknown ones are left out)."""
        with self._read() as session:
            return cases.find_case_ids(
                session, collection_id, external_ids=external_ids, case_ids=case_ids
            )

    def delete_cases(self, session: Session, ids: Sequence[int]) -> int:
        """Delete cases by id in the caller's transaction; returns how many existed."""
        return cases.delete_cases(session, ids)

    def case_ids_matching(self, collection_id: int, filters: Mapping[str, str]) -> list[int]:
        """Sorted ids of the collection's cases that pass every filter (``label``, ``split``
        or a metadata key; :func:`indexer.store.case_filters.case_ids_matching`)."""
        with self._read() as session:
            return case_filters.case_ids_matching(session, collection_id, filters)

    def count_cases(self, collection_id: int) -> int:
        """How many cases the collection holds."""
        with self._read() as session:
            return cases.count_cases(session, collection_id)

    def case_diagnoses(self, collection_id: int) -> list[tuple[int, tuple[str, ...], bool]]:
        """(case id, labels, labelled) of every case of the collection, by id (the label
        ranking's lookup, :mod:`indexer.label_ranking`)."""
        with self._read() as session:
            return cases.case_diagnoses(session, collection_id)

    # ----------------------------------------------------------------- index versions

    def next_version_number(self, collection_id: int) -> int:
        """One more than the collection's newest version number (1 for the first)."""
        with self._read() as session:
            return versions.next_version_number(session, collection_id)

    def create_version(
        self,
        collection_id: int,
        *,
        path: str,
        checkpoint_sha256: str,
        factory: str,
        params: Mapping[str, Any],
    ) -> VersionInfo:
        """A new "building" version numbered :meth:`next_version_number` at creation."""
        with self.session() as session:
            return versions.create_version(
                session,
                collection_id,
                path=path,
                checkpoint_sha256=checkpoint_sha256,
                factory=factory,
                params=params,
            )

    def activate_version(self, session: Session, version_id: int, vector_count: int) -> None:
        """Make the version ready and the collection's only active one, in the caller's
        transaction (a rollback leaves the previous version active)."""
        versions.activate_version(session, version_id, vector_count)

    def fail_version(self, version_id: int, message: str) -> None:
        """Mark a version that never became active as failed, with the reason."""
        with self.session() as session:
            versions.fail_version(session, version_id, message)

    def active_version(self, collection_id: int) -> VersionInfo | None:
        """The collection's active version, or ``None`` before the first completed build."""
        with self._read() as session:
            return versions.active_version(session, collection_id)

    def list_versions(self, collection_id: int) -> list[VersionInfo]:
        """All versions of the collection, oldest first."""
        with self._read() as session:
            return versions.list_versions(session, collection_id)

    def mark_pruned(self, version_ids: Sequence[int]) -> None:
        """Record that these versions' files were deleted. The active one cannot be."""
        with self.session() as session:
            versions.mark_pruned(session, version_ids)

    # ----------------------------------------------------------------- jobs

    def create_job(self, kind: str, collection_id: int | None = None) -> JobInfo:
        """A new "queued" job with a random UUID."""
        with self.session() as session:
            return jobs.create_job(session, kind, collection_id)

    def start_job(self, job_id: str, *, pid: int, host: str) -> None:
        """Mark a queued job running in process ``pid`` on ``host``."""
        with self.session() as session:
            jobs.start_job(session, job_id, pid=pid, host=host)

    def update_job(
        self,
        job_id: str,
        *,
        progress: float | None = None,
        counts: Mapping[str, Any] | None = None,
        message: str | None = None,
        heartbeat: bool = True,
    ) -> None:
        """Record progress (0..1), counts and/or a message, and (by default) a heartbeat;
        a finished job is a :class:`StoreError` (its worker should stop)."""
        with self.session() as session:
            jobs.update_job(
                session,
                job_id,
                progress=progress,
                counts=counts,
                message=message,
                heartbeat=heartbeat,
            )

    def finish_job(
        self,
        job_id: str,
        *,
        state: str,
        counts: Mapping[str, Any] | None = None,
        errors: Sequence[str] | None = None,
        message: str | None = None,
    ) -> None:
        """End a queued or running job as "succeeded" (progress 1) or "failed"."""
        with self.session() as session:
            jobs.finish_job(
                session, job_id, state=state, counts=counts, errors=errors, message=message
            )

    def get_job(self, job_id: str) -> JobInfo | None:
        """The job with this id, or ``None``."""
        with self._read() as session:
            return jobs.get_job(session, job_id)

    def list_jobs(self, collection_id: int | None = None) -> list[JobInfo]:
        """Jobs of one collection (or all jobs), newest first."""
        with self._read() as session:
            return jobs.list_jobs(session, collection_id)

    def running_job(self, collection_id: int) -> JobInfo | None:
        """The collection's newest "running" job, if any (call :meth:`reap_stale_jobs`
        first so a crashed job does not count)."""
        with self._read() as session:
            return jobs.running_job(session, collection_id)

    def reap_stale_jobs(self, *, stale_after_s: float = 600) -> list[str]:
        """Mark failed every running job whose process is gone; returns their ids
        (:func:`indexer.store.jobs.reap_stale_jobs`)."""
        with self.session() as session:
            return jobs.reap_stale_jobs(session, stale_after_s=stale_after_s)

    # ----------------------------------------------------------------- follow cursors

    def get_cursor(self, collection_id: int, source: str) -> str | None:
        """Where the follower of ``source`` stopped (:func:`indexer.store.cursors.get_cursor`)."""
        with self._read() as session:
            return cursors.get_cursor(session, collection_id, source)

    def set_cursor(self, collection_id: int, source: str, cursor: str) -> None:
        """Store the follower's cursor (:func:`indexer.store.cursors.set_cursor`, an upsert)."""
        with self.session() as session:
            cursors.set_cursor(session, collection_id, source, cursor)

    def delete_cursor(self, collection_id: int, source: str) -> bool:
        """Forget the follower's cursor; whether there was one."""
        with self.session() as session:
            return cursors.delete_cursor(session, collection_id, source)
