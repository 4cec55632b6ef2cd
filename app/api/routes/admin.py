"""The admin API (bearer token): reindex, follow jobs, remove a case, start and stop PACS
followers."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminDep, ServicesDep
from app.api.routes.cases import CaseId, served_case
from app.errors import ApiError
from app.followers import RunningFollower
from app.jobs import JobRequestError
from app.schemas import ErrorOut, FollowerOut, FollowIn, JobOut, ReindexIn
from indexer.store import JobInfo

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])

ADMIN_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    404: {"model": ErrorOut, "description": "not found, or the admin API is disabled"},
}


JOB_OUT_OWN_FIELDS = frozenset({"job_id", "status_url"})  # every other field is JobInfo's


def job_out(job: JobInfo, root: str = "") -> JobOut:
    """The API view of ``job``: each JobOut field copied from the JobInfo field of its name."""
    copied = {name: getattr(job, name) for name in JobOut.model_fields.keys() - JOB_OUT_OWN_FIELDS}
    return JobOut(job_id=job.id, status_url=f"{root}/admin/jobs/{job.id}", **copied)


@router.post(
    "/reindex",
    status_code=202,
    response_model=JobOut,
    responses={
        **ADMIN_ERRORS,
        400: {"model": ErrorOut, "description": "bad request"},
        403: {"model": ErrorOut, "description": "the source is outside MEDRET_ARCHIVE_ROOTS"},
        409: {
            "model": ErrorOut,
            "description": "a job already runs for this collection, or its keys are hashed "
            "with another MEDRET_GROUP_SALT",
        },
        503: {"model": ErrorOut, "description": "the service has no MEDRET_GROUP_SALT"},
    },
    summary="Start building a new index version from an archive (a background job)",
)
async def reindex(request: Request, body: ReindexIn, services: ServicesDep) -> JobOut:
    try:
        job = await run_in_threadpool(
            services.launcher.start_reindex,
            body.collection,
            body.source,
            mode=body.mode,
            checkpoint=body.checkpoint,
            layout=body.layout,
        )
    except JobRequestError as exc:
        raise ApiError(exc.status, exc.detail) from None
    return job_out(job, request.scope.get("root_path", ""))


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    responses=ADMIN_ERRORS,
    summary="A job's state, progress, counts and errors",
)
async def get_job(
    request: Request,
    job_id: Annotated[uuid.UUID, Path(description="the id POST /admin/reindex returned")],
    services: ServicesDep,
) -> JobOut:
    await run_in_threadpool(services.launcher.poll)
    job = await run_in_threadpool(services.store.get_job, str(job_id))
    if job is None:
        raise ApiError(404, f"no job {job_id}")
    return job_out(job, request.scope.get("root_path", ""))


@router.delete(
    "/cases/{case_id}",
    status_code=202,
    response_model=JobOut,
    responses={**ADMIN_ERRORS, 409: {"model": ErrorOut, "description": "a job is running"}},
    summary="Remove a case (e.g. consent withdrawn): a job builds a version without it",
)
async def delete_case(request: Request, case_id: CaseId, services: ServicesDep) -> JobOut:
    runtime, case = await run_in_threadpool(served_case, services, case_id)
    try:
        job = await run_in_threadpool(
            services.launcher.start_removal, runtime.info.id, runtime.name, case.id
        )
    except JobRequestError as exc:
        raise ApiError(exc.status, exc.detail) from None
    return job_out(job, request.scope.get("root_path", ""))


def follower_out(follower: RunningFollower) -> FollowerOut:
    return FollowerOut(
        collection=follower.collection,
        source=follower.source,
        pid=follower.pid,
        since=follower.since,
    )


@router.post(
    "/follow",
    status_code=201,
    response_model=FollowerOut,
    responses={
        **ADMIN_ERRORS,
        400: {"model": ErrorOut, "description": "bad request"},
        403: {"model": ErrorOut, "description": "the source is not MEDRET_DICOMWEB_URL's PACS"},
        409: {"model": ErrorOut, "description": "a follower already runs for this collection"},
        503: {"model": ErrorOut, "description": "the service has no MEDRET_GROUP_SALT"},
    },
    summary="Start following a PACS into a collection (a 'medret follow' process)",
)
async def start_follower(body: FollowIn, services: ServicesDep) -> FollowerOut:
    try:
        follower = await run_in_threadpool(
            services.followers.start,
            body.collection,
            body.source,
            checkpoint=body.checkpoint,
            labels=body.labels,
        )
    except JobRequestError as exc:
        raise ApiError(exc.status, exc.detail) from None
    return follower_out(follower)


@router.get(
    "/follow",
    response_model=list[FollowerOut],
    responses=ADMIN_ERRORS,
    summary="The PACS followers this service runs",
)
async def list_followers(services: ServicesDep) -> list[FollowerOut]:
    return [follower_out(f) for f in await run_in_threadpool(services.followers.running)]


@router.delete(
    "/follow/{collection}",
    status_code=204,
    responses={**ADMIN_ERRORS},
    summary="Stop a collection's follower (SIGTERM, then SIGKILL after 10 s)",
)
async def stop_follower(
    collection: Annotated[str, Path(max_length=64, description="the collection followed")],
    services: ServicesDep,
) -> None:
    if not await run_in_threadpool(services.followers.stop, collection):
        raise ApiError(404, f"no follower runs for {collection!r}")
