"""Background jobs: their life from queued to finished, and crashed ones found and failed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from indexer.store import JOB_DIED_MESSAGE, JobKind, JobState, MetadataStore, StoreError
from support.store import make_collection


def test_job_lifecycle(store: MetadataStore) -> None:
    coll = make_collection(store)
    job = store.create_job("full", coll.id)  # a plain string works as well as JobKind.FULL
    assert (job.state, job.progress, job.counts, job.errors) == (JobState.QUEUED, 0.0, {}, ())
    store.start_job(job.id, pid=os.getpid(), host=socket.gethostname())
    started = store.get_job(job.id)
    assert started is not None
    assert started.state == JobState.RUNNING
    assert started.heartbeat_at is not None
    running = store.running_job(coll.id)
    assert running is not None
    assert running.id == job.id

    time.sleep(0.01)
    store.update_job(job.id, progress=0.5, counts={"seen": 5}, message="embedding")
    updated = store.get_job(job.id)
    assert updated is not None
    assert updated.heartbeat_at is not None
    assert (updated.progress, updated.counts, updated.message) == (0.5, {"seen": 5}, "embedding")
    assert updated.heartbeat_at > started.heartbeat_at

    store.finish_job(job.id, state=JobState.SUCCEEDED, counts={"added": 5})
    done = store.get_job(job.id)
    assert done is not None
    assert (done.state, done.progress) == (JobState.SUCCEEDED, 1.0)
    assert done.finished_at is not None
    assert store.running_job(coll.id) is None
    with pytest.raises(StoreError, match="succeeded"):
        store.update_job(job.id, progress=0.9)
    assert [j.id for j in store.list_jobs(coll.id)] == [job.id]
    assert store.get_job("no-such-job") is None


def test_reap_stale_jobs_fails_jobs_whose_process_died(store: MetadataStore) -> None:
    coll = make_collection(store)
    finished = subprocess.Popen(["sleep", "0"])
    finished.wait()  # its pid is now free: the process is gone
    host = socket.gethostname()
    dead, alive, remote = (store.create_job(kind, coll.id) for kind in JobKind)
    store.start_job(dead.id, pid=finished.pid, host=host)
    store.start_job(alive.id, pid=os.getpid(), host=host)
    store.start_job(remote.id, pid=finished.pid, host="another-host")  # only heartbeat counts

    assert store.reap_stale_jobs() == [dead.id]
    reaped = store.get_job(dead.id)
    assert reaped is not None
    assert (reaped.state, reaped.message) == (JobState.FAILED, JOB_DIED_MESSAGE)
    assert reaped.finished_at is not None
    assert str(finished.pid) in reaped.errors[0]
    for job in (alive, remote):
        still = store.get_job(job.id)
        assert still is not None
        assert still.state == JobState.RUNNING

    time.sleep(0.05)
    # a silent job on another host is presumed dead; a live process on this host is only slow
    assert store.reap_stale_jobs(stale_after_s=0.01) == [remote.id]
    assert store.get_job(alive.id).state == JobState.RUNNING
    assert store.reap_stale_jobs() == []


def test_states_are_stored_as_their_plain_strings(store: MetadataStore) -> None:
    coll = make_collection(store)
    job = store.create_job(JobKind.ADD, coll.id)
    assert (job.kind, job.state) == (JobKind.ADD, JobState.QUEUED)
    assert (type(job.kind), type(job.state)) == (JobKind, JobState)
    store.start_job(job.id, pid=os.getpid(), host=socket.gethostname())
    with store.engine.connect() as conn:  # the rows read as they did before the enums
        row = conn.execute(text("SELECT kind, state FROM jobs")).one()
    assert tuple(row) == ("add", "running")
    assert [type(value) for value in row] == [str, str]


def test_a_job_of_an_earlier_process_with_our_pid_is_reaped(
    store: MetadataStore, store_url: str
) -> None:
    """A container restarted with the same host name gives the new process the old pid: the
    old run's job row names a live process (this one), yet nobody is running it."""
    coll = make_collection(store)
    job = store.create_job(JobKind.ADD, coll.id)
    earlier = subprocess.run(  # another process starts the job with *our* pid, as the old one did
        [
            sys.executable,
            "-c",
            "import sys; from indexer.store import MetadataStore; "
            "s = MetadataStore.open(sys.argv[1]); "
            "s.start_job(sys.argv[2], pid=int(sys.argv[3]), host=sys.argv[4]); s.close()",
            store_url,
            job.id,
            str(os.getpid()),
            socket.gethostname(),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert earlier.returncode == 0, earlier.stderr
    assert store.reap_stale_jobs() == [job.id]
    assert "later process" in store.get_job(job.id).errors[0]
    mine = store.create_job(JobKind.ADD, coll.id)
    store.start_job(mine.id, pid=os.getpid(), host=socket.gethostname())
    assert store.reap_stale_jobs() == []  # the ones this process started are alive
