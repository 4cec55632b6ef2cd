"""GET /cases/{id} and its image and thumbnail. Case ids are integers: no client-supplied
text ever becomes a filesystem path. A case indexed from a PACS carries its UIDs and a
link to the clinical viewer, and its image is fetched from the PACS again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ServicesDep
from app.errors import ApiError
from app.images import CaseImageError, case_picture, case_thumbnail
from app.references import REFERENCE_ERRORS, dicom_ref, viewer_url
from app.runtime import CollectionRuntime
from app.schemas import CaseOut, ErrorOut, LabelOut
from app.services import Services
from indexer.store import CaseInfo

router = APIRouter(prefix="/cases", tags=["cases"])

CaseId = Annotated[int, Path(ge=1, le=2**62, description="the case id from a query answer")]
NOT_FOUND: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorOut, "description": "no such case in a served collection"}
}
IMAGE_ERRORS: dict[int | str, dict[str, object]] = {
    **NOT_FOUND,
    409: {"model": ErrorOut, "description": "the archived file changed since indexing"},
    410: {"model": ErrorOut, "description": "the archived file is gone or unreadable"},
    502: {"model": ErrorOut, "description": "the case's PACS is down or refused the request"},
    504: REFERENCE_ERRORS[504],
}
CACHE_IMMUTABLE = "private, max-age=86400, immutable"


def case_fields(
    runtime: CollectionRuntime,
    case: CaseInfo,
    root: str = "",
    viewer_template: str | None = None,
) -> dict[str, Any]:
    """The fields of :class:`CaseOut` (and of a query's :class:`HitOut`) for ``case``."""
    dicom = dicom_ref(case.source_uri)
    return {
        "case_id": case.id,
        "collection": runtime.name,
        "labels": [LabelOut(code=c, name=runtime.label_name(c)) for c in case.labels],
        "labelled": case.labelled,
        "split": case.split,
        "metadata": dict(case.meta),
        "image_url": f"{root}/cases/{case.id}/image",
        "thumbnail_url": f"{root}/cases/{case.id}/thumbnail",
        "dicom": dicom,
        "viewer_url": viewer_url(viewer_template, dicom),
    }


def served_case(services: Services, case_id: int) -> tuple[CollectionRuntime, CaseInfo]:
    case = services.store.get_case(case_id)
    runtime = services.registry.collection_ids().get(case.collection_id) if case else None
    if case is None or runtime is None:
        raise ApiError(404, f"no case {case_id} in the collections this service holds")
    return runtime, case


@router.get("/{case_id}", response_model=CaseOut, responses=NOT_FOUND, summary="A case's record")
async def get_case(request: Request, case_id: CaseId, services: ServicesDep) -> CaseOut:
    runtime, case = await run_in_threadpool(served_case, services, case_id)
    root = request.scope.get("root_path", "")
    return CaseOut(**case_fields(runtime, case, root, services.settings.viewer_url_template))


@router.get(
    "/{case_id}/image",
    responses={
        **IMAGE_ERRORS,
        200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
    },
    response_class=Response,
    summary="The case's image: the original, or a PNG rendering (DICOM, TIFF, BMP)",
)
async def get_case_image(case_id: CaseId, services: ServicesDep) -> Response:
    _, case = await run_in_threadpool(served_case, services, case_id)
    try:
        picture = await run_in_threadpool(case_picture, case, services.limits)
    except CaseImageError as exc:
        raise ApiError(exc.status, exc.detail) from None
    return Response(
        picture.content,
        media_type=picture.media_type,
        headers={"Cache-Control": CACHE_IMMUTABLE, "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/{case_id}/thumbnail",
    responses={**IMAGE_ERRORS, 200: {"content": {"image/png": {}}}},
    response_class=FileResponse,
    summary="A small PNG of the case's image (cached)",
)
async def get_case_thumbnail(case_id: CaseId, services: ServicesDep) -> FileResponse:
    _, case = await run_in_threadpool(served_case, services, case_id)
    try:
        path = await run_in_threadpool(
            case_thumbnail,
            case,
            services.thumbnail_dir,
            services.settings.thumbnail_px,
            services.limits,
        )
    except CaseImageError as exc:
        raise ApiError(exc.status, exc.detail) from None
    return FileResponse(
        path,
        media_type="image/png",
        headers={"Cache-Control": CACHE_IMMUTABLE, "X-Content-Type-Options": "nosniff"},
    )
