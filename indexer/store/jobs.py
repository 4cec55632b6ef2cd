"""Background indexing jobs: queued, running (with progress and a heartbeat), finished.

Functions over a caller's :class:`~sqlalchemy.orm.Session`. A job records the process
running it (pid and host), so a crashed job can be found and marked failed
(:func:`reap_stale_jobs`).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from indexer.store.errors import StoreError
from indexer.store.records import (
    FINISHED_JOB_STATES,
    JOB_KINDS,
    UNFINISHED_JOB_STATES,
    JobInfo,
    JobKind,
    JobState,
    record_from_row,
)
from indexer.store.tables import Job, utcnow

log = logging.getLogger(__name__)

JOB_DIED_MESSAGE: Final = "the process running it died"


def job_info(row: Job) -> JobInfo:
    """The record of a ``jobs`` row."""
    return record_from_row(
        JobInfo,
        row,
        kind=JobKind(row.kind),
        state=JobState(row.state),
        counts=dict(row.counts),
        errors=tuple(row.errors),
    )


def create_job(session: Session, kind: str, collection_id: int | None = None) -> JobInfo:
    """A new "queued" job with a random UUID."""
    if kind not in JOB_KINDS:
        raise StoreError(f"job kind must be one of {JOB_KINDS}, not {kind!r}")
    row = Job(
        id=str(uuid.uuid4()),
        collection_id=collection_id,
        kind=JobKind(kind),
        state=JobState.QUEUED,
        progress=0.0,
        counts={},
        errors=[],
        message="",
        pid=None,
        host=None,
        heartbeat_at=None,
        created_at=utcnow(),
        started_at=None,
        finished_at=None,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise StoreError(f"collection id {collection_id} does not exist") from exc
    return job_info(row)


# The jobs this process started: a running job recorded with this process's pid and host
# but not started here belongs to an earlier process that had the same pid (a container
# restarted with the same host name), and is dead.
_STARTED_HERE: set[str] = set()


def start_job(session: Session, job_id: str, *, pid: int, host: str) -> None:
    """Mark a queued job running in process ``pid`` on ``host``."""
    row = _job_for_update(session, job_id, JobState.QUEUED)
    now = utcnow()
    if pid == os.getpid():
        _STARTED_HERE.add(job_id)
    row.state = JobState.RUNNING
    row.pid = pid
    row.host = host
    row.started_at = now
    row.heartbeat_at = now


def update_job(
    session: Session,
    job_id: str,
    *,
    progress: float | None = None,
    counts: Mapping[str, Any] | None = None,
    message: str | None = None,
    heartbeat: bool = True,
) -> None:
    """Record progress (0..1), counts and/or a message, and (by default) a heartbeat.

    A job that was already finished (e.g. reaped as stale) is a :class:`StoreError`:
    its worker should stop.
    """
    if progress is not None and not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    row = _job_for_update(session, job_id, *UNFINISHED_JOB_STATES)
    if progress is not None:
        row.progress = progress
    if counts is not None:
        row.counts = dict(counts)
    if message is not None:
        row.message = message
    if heartbeat:
        row.heartbeat_at = utcnow()


def finish_job(
    session: Session,
    job_id: str,
    *,
    state: str,
    counts: Mapping[str, Any] | None = None,
    errors: Sequence[str] | None = None,
    message: str | None = None,
) -> None:
    """End a queued or running job as "succeeded" (progress 1) or "failed"."""
    if state not in FINISHED_JOB_STATES:
        raise StoreError(f"a job finishes as 'succeeded' or 'failed', not {state!r}")
    row = _job_for_update(session, job_id, *UNFINISHED_JOB_STATES)
    row.state = JobState(state)
    row.finished_at = utcnow()
    if state == JobState.SUCCEEDED:
        row.progress = 1.0
    if counts is not None:
        row.counts = dict(counts)
    if errors is not None:
        row.errors = list(errors)
    if message is not None:
        row.message = message
    log.info("job %s %s", job_id, state)


def get_job(session: Session, job_id: str) -> JobInfo | None:
    """The job with this id, or ``None``."""
    row = session.get(Job, job_id)
    return job_info(row) if row is not None else None


def list_jobs(session: Session, collection_id: int | None = None) -> list[JobInfo]:
    """Jobs of one collection (or all jobs), newest first."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id)
    if collection_id is not None:
        query = query.where(Job.collection_id == collection_id)
    return [job_info(row) for row in session.scalars(query)]


def running_job(session: Session, collection_id: int) -> JobInfo | None:
    """The collection's newest "running" job, if any (call :func:`reap_stale_jobs`
    first so a crashed job does not count)."""
    row = session.scalars(
        select(Job)
        .where(Job.collection_id == collection_id, Job.state == JobState.RUNNING)
        .order_by(Job.started_at.desc())
        .limit(1)
    ).one_or_none()
    return job_info(row) if row is not None else None


def reap_stale_jobs(session: Session, *, stale_after_s: float = 600) -> list[str]:
    """Mark failed every running job whose process is gone; returns their ids.

    Gone: it ran on this host and its pid no longer exists, or (any host) its last
    heartbeat is older than ``stale_after_s``. Workers must heartbeat
    (:func:`update_job`) more often than that.
    """
    host = socket.gethostname()
    now = utcnow()
    me = os.getpid()
    reaped: list[str] = []
    running = session.scalars(select(Job).where(Job.state == JobState.RUNNING).with_for_update())
    for row in running.all():
        last_beat = row.heartbeat_at or row.started_at or row.created_at
        idle_s = (now - last_beat).total_seconds()
        if row.host == host and row.pid is not None and not pid_alive(row.pid):
            reason = f"process {row.pid} on {host} no longer exists"
        elif row.host == host and row.pid == me and row.id not in _STARTED_HERE:
            # a restarted container: the same host name and pid, but an earlier process
            reason = f"process {row.pid} on {host} is a later process (the job's has gone)"
        elif idle_s > stale_after_s and not (
            row.host == host and row.pid is not None and pid_alive(row.pid)
        ):  # a live process on this host is slow, not dead
            reason = f"no heartbeat from process {row.pid} on {row.host} for {idle_s:.0f} s"
        else:
            continue
        row.state = JobState.FAILED
        row.message = JOB_DIED_MESSAGE
        row.errors = [*row.errors, reason]
        row.finished_at = now
        reaped.append(row.id)
        log.warning("job %s failed: %s", row.id, reason)
    return reaped


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (``os.kill(pid, 0)``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, but belongs to another user
        return True
    return True


def _job_for_update(session: Session, job_id: str, *states: JobState) -> Job:
    row = session.get(Job, job_id, with_for_update=True)
    if row is None:
        raise StoreError(f"job {job_id} does not exist")
    if row.state not in states:
        raise StoreError(
            f"job {job_id} is {row.state}"
            + (f" ({row.message})" if row.message else "")
            + f"; expected {' or '.join(states)}"
        )
    return row
