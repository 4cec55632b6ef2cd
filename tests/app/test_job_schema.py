"""The admin API's job body (``JobOut``) is the store's ``JobInfo``, field by field."""

from __future__ import annotations

import datetime as dt
import typing

from app.api.routes.admin import JOB_OUT_OWN_FIELDS, job_out
from app.schemas import JobOut
from indexer.store import JobInfo, JobKind, JobState

# How a JobInfo field's type reads in JSON: tuples are arrays, the enums plain strings.
AS_JSON = {tuple[str, ...]: list[str], JobKind: str}


def test_every_job_out_field_is_a_job_info_field_of_the_same_type() -> None:
    info_types = typing.get_type_hints(JobInfo)
    shared = JobOut.model_fields.keys() - JOB_OUT_OWN_FIELDS
    assert shared <= info_types.keys()
    for name in shared - {"state"}:
        wanted = AS_JSON.get(info_types[name], info_types[name])
        assert JobOut.model_fields[name].annotation == wanted, name
    # the OpenAPI document lists the states: exactly JobState's, in its order
    assert info_types["state"] is JobState
    assert typing.get_args(JobOut.model_fields["state"].annotation) == tuple(
        state.value for state in JobState
    )


def test_job_out_is_the_json_the_admin_api_has_always_sent() -> None:
    created = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    job = JobInfo(
        id="0b7e4ad2-7d2e-4c39-9a0e-9f4f2a0e5b11",
        collection_id=3,
        kind=JobKind.ADD,
        state=JobState.RUNNING,
        progress=0.25,
        counts={"seen": 7},
        errors=("one unreadable image",),
        message="embedding",
        pid=1234,
        host="indexer-1",
        heartbeat_at=created,
        created_at=created,
        started_at=created,
        finished_at=None,
    )
    assert job_out(job, "/medret").model_dump(mode="json") == {
        "job_id": job.id,
        "kind": "add",
        "state": "running",
        "progress": 0.25,
        "counts": {"seen": 7},
        "errors": ["one unreadable image"],
        "message": "embedding",
        "created_at": "2026-01-02T03:04:05Z",
        "started_at": "2026-01-02T03:04:05Z",
        "finished_at": None,
        "status_url": f"/medret/admin/jobs/{job.id}",
    }
