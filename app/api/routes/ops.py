"""Operations: liveness, readiness, Prometheus metrics and the list of collections."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.schemas import CollectionOut, HealthOut, IndexOut, LabelOut, ReadyOut

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthOut, summary="The process is alive")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.head("/healthz", include_in_schema=False)
async def healthz_head() -> Response:
    return Response(status_code=200)


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "not ready"}},
    summary="Models and indexes are loaded",
)
async def readyz(services: ServicesDep) -> JSONResponse:
    registry = services.registry
    ready = await run_in_threadpool(registry.is_ready)
    body = ReadyOut(
        ready=ready,
        collections={
            name: IndexOut(
                collection=name, version=rt.version, size=rt.size, factory=rt.index.version.factory
            )
            for name, rt in registry.runtimes.items()
        },
        problems=dict(registry.problems),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)")
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/collections", response_model=list[CollectionOut], summary="Served collections")
async def collections(services: ServicesDep) -> list[CollectionOut]:
    out = []
    for name, rt in sorted(services.registry.runtimes.items()):
        labels = rt.runner.meta.labels
        out.append(
            CollectionOut(
                name=name,
                task=rt.info.task,
                version=rt.version,
                size=rt.size,
                labels=[
                    LabelOut(code=c, name=n)
                    for c, n in zip(labels.codes, labels.names, strict=True)
                ],
                checkpoint_sha256=rt.runner.sha256,
                ood_threshold=rt.ood.threshold if np.isfinite(rt.ood.threshold) else None,
            )
        )
    return out
