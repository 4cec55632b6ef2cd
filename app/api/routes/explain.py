"""POST /explain: an image and an archived case in; the regions of each that raise their
similarity score, and those of the image that raise its top class, out.

The upload (or the PACS instance named by ``study_uid``, ``series_uid`` and
``instance_uid``, as form fields or a JSON body) is decoded exactly as ``POST /query``
decodes it (same limits, same errors);
the method is :mod:`model.explain` (docs/service.md, "POST /explain").
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.api.deps import ServicesDep
from app.api.routes.cases import IMAGE_ERRORS, served_case
from app.api.routes.query import (
    QUERY_ERRORS,
    ImageUpload,
    InstanceUid,
    SeriesUid,
    StudyUid,
    decoded_upload,
    json_alternative,
    predicted,
    runtime_for,
)
from app.errors import ApiError
from app.explanations import (
    ExplanationUnsupportedError,
    case_canvas,
    full_explanation,
)
from app.images import CaseImageError
from app.logs import request_id_var
from app.references import chosen_image, is_json, json_body, reference_of
from app.schemas import ErrorOut, ExplainOut, ReferenceIn

router = APIRouter(tags=["query"])

EXPLAIN_ERRORS: dict[int | str, dict[str, object]] = {
    **QUERY_ERRORS,
    404: {
        "model": ErrorOut,
        "description": "unknown collection, no such case in it, or no such PACS instance",
    },
    409: IMAGE_ERRORS[409],
    410: IMAGE_ERRORS[410],
}


@router.post(
    "/explain",
    response_model=ExplainOut,
    responses=EXPLAIN_ERRORS,
    summary="Show which regions of an image and of an archived case make them similar",
    description="The image is an uploaded `file`, or an instance of the PACS named by "
    "`study_uid`, `series_uid` and `instance_uid` (form fields or a JSON body).",
    openapi_extra=json_alternative(ReferenceIn),
)
async def explain(
    request: Request,
    services: ServicesDep,
    case_id: Annotated[
        int, Query(ge=1, le=2**62, description="the case to compare with (from a query answer)")
    ],
    file: ImageUpload = None,
    study_uid: StudyUid = None,
    series_uid: SeriesUid = None,
    instance_uid: InstanceUid = None,
    collection: Annotated[
        str | None, Query(max_length=64, description="default: the case's own collection")
    ] = None,
) -> Response:
    uids = {"study_uid": study_uid, "series_uid": series_uid, "instance_uid": instance_uid}
    if is_json(request):
        uids = (await json_body(request, ReferenceIn)).model_dump()
    image = chosen_image(file, reference_of(uids))
    if collection is not None:
        runtime_for(services, collection)  # 404 for an unknown collection, 503 if not ready
    runtime, case = await services.run(served_case, services, case_id)
    if collection is not None and runtime.name != collection:
        raise ApiError(404, f"no case {case_id} in collection {collection!r}")
    _, canvas = await decoded_upload(services, runtime, image)
    try:
        archived = await services.run(case_canvas, runtime, case, services.limits)
    except CaseImageError as exc:
        raise ApiError(exc.status, exc.detail) from None
    prediction = await predicted(runtime, canvas)
    explained_at = time.perf_counter()
    try:
        similarity, class_map = await services.run(
            full_explanation, runtime, canvas, prediction, case, archived
        )
    except ExplanationUnsupportedError as exc:
        raise ApiError(501, str(exc)) from None
    done = time.perf_counter()
    services.metrics.stage.labels("explain").observe(done - explained_at)
    answer = ExplainOut(
        **similarity.model_dump(),
        request_id=request_id_var.get(),
        class_map=class_map,
        explain_ms=(done - explained_at) * 1e3,
    )
    return Response(answer.model_dump_json(), media_type="application/json")
