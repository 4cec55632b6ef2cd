"""POST /query: an image in; predictions, similar cases and an out-of-distribution flag out.

The image is an uploaded file, or an instance of the configured PACS named by its UIDs
(form fields or a JSON body; :mod:`app.references`), decoded the same way.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections import Counter
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile

from app.api.deps import ServicesDep
from app.api.routes.cases import case_fields
from app.batching import BatcherClosedError
from app.errors import ApiError, decode_error
from app.explanations import ExplanationUnsupportedError, hit_explanations
from app.images import render_preview
from app.logs import request_id_var
from app.references import (
    REFERENCE_ERRORS,
    Reference,
    chosen_image,
    is_json,
    json_body,
    reference_of,
    retrieved_instance,
)
from app.runner import Prediction
from app.runtime import (
    AmbiguousCollectionError,
    CollectionRuntime,
    NotReadyError,
    UnknownCollectionError,
)
from app.schemas import (
    UID_PATTERN,
    ErrorOut,
    ExplanationOut,
    HitOut,
    MatchCalibrationOut,
    ModelOut,
    OodOut,
    PredictionOut,
    QueryImageOut,
    QueryIndexOut,
    QueryOut,
    QueryReferenceIn,
    ReferenceIn,
    TimingsOut,
    VoteBasisOut,
    VoteOut,
)
from app.services import Services
from imaging.decode import DecodedImage, DecodeLimits, ImageDecodeError, decode_image
from imaging.limits import holding_reservations
from indexer.search import Hit, SearchError
from indexer.store import StoreError

log = logging.getLogger(__name__)
router = APIRouter(tags=["query"])

PREVIEW_PX = 384
FILTER_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the metadata keys the store can look up
MAX_FILTER_VALUE = 256  # characters: longer than any metadata value worth matching
MAX_FILTERS = 20
MAX_EXPLAINED = 10  # ?explain=N: each costs 3.5-10 query embeds (docs/benchmarks.md)

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "bad parameters",
        404: "unknown collection",
        413: "the upload or the decoded image is too large",
        415: "not an image or DICOM file, or an unsupported format",
        422: "an image or DICOM file that cannot be decoded",
        501: "explanations asked for, but the collection's network cannot be explained",
        503: "no index loaded yet, or the server is busy decoding other large images (retry)",
    }.items()
}
ERRORS.update({code: REFERENCE_ERRORS[code] for code in (502, 504)})
QUERY_ERRORS: dict[int | str, dict[str, object]] = {
    **ERRORS,
    **{code: REFERENCE_ERRORS[code] for code in (400, 404, 422)},
}
UID_FORM = {"maxLength": 64, "pattern": UID_PATTERN}


def uid_form(what: str) -> Any:
    """A form field naming one UID of a PACS instance (checked by :mod:`app.references`,
    so that a malformed UID is a 422 with a sentence)."""
    return Form(
        description=f"{what} of an instance in the PACS (MEDRET_DICOMWEB_URL), instead of "
        "a file; all three UIDs together",
        json_schema_extra=UID_FORM,
    )


# The image of a query or an explanation: an upload, or the three UIDs of a PACS instance.
ImageUpload = Annotated[
    UploadFile | None,
    File(description="PNG, JPEG, TIFF, BMP, WebP or DICOM; recognised by content"),
]
StudyUid = Annotated[str | None, uid_form("StudyInstanceUID")]
SeriesUid = Annotated[str | None, uid_form("SeriesInstanceUID")]
InstanceUid = Annotated[str | None, uid_form("SOPInstanceUID")]


def json_alternative(model: type[ReferenceIn]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` entry that documents a JSON body of ``model``."""
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}}}}


def runtime_for(services: Services, collection: str | None) -> CollectionRuntime:
    try:
        return services.registry.get(collection)
    except NotReadyError as exc:
        raise ApiError(503, str(exc)) from None
    except UnknownCollectionError as exc:
        raise ApiError(404, str(exc)) from None
    except AmbiguousCollectionError as exc:
        raise ApiError(400, str(exc)) from None


def parse_filters(label: str | None, split: str | None, raw: list[str]) -> dict[str, str]:
    """``?filter=key:value`` items (and ``label``, ``split``) as the store's filters; 400
    for a malformed item, a key the store cannot look up or an over-long value (the query
    parameter itself takes at most :data:`MAX_FILTERS` items)."""
    filters: dict[str, str] = {}
    for item in raw:
        key, sep, value = item.partition(":")
        if not sep or not key or not value:
            raise ApiError(
                400, f"a filter is written key:value (e.g. modality:CR), not {item[:80]!r}"
            )
        if not FILTER_KEY.fullmatch(key):
            raise ApiError(
                400,
                f"filter key {key[:80]!r} is not a metadata key: use 1–64 letters, digits, "
                "'_' or '-'",
            )
        if len(value) > MAX_FILTER_VALUE:
            raise ApiError(
                400,
                f"the value of filter {key!r} is {len(value)} characters long; "
                f"at most {MAX_FILTER_VALUE} are allowed",
            )
        filters[key] = value
    if label:
        filters["label"] = label
    if split:
        filters["split"] = split
    return filters


def decode_for(
    runtime: CollectionRuntime, data: bytes, limits: DecodeLimits
) -> tuple[DecodedImage, torch.Tensor]:
    with holding_reservations():  # the resize to the canvas counts against the budget too
        decoded = decode_image(data, limits)
        return decoded, runtime.runner.canvas(decoded.pixels)


async def decoded_upload(
    services: Services, runtime: CollectionRuntime, file: UploadFile | Reference
) -> tuple[DecodedImage, torch.Tensor]:
    """The uploaded file (or the PACS instance a reference names) decoded and letterboxed
    for `runtime`'s model; 413/415/422 if not, 404/502/504 for what the PACS does wrong."""
    if isinstance(file, Reference):
        data = await services.run(retrieved_instance, services, file)
    else:
        data = await file.read()
        await file.close()
    try:
        return await services.run(decode_for, runtime, data, services.limits)
    except ImageDecodeError as exc:
        raise decode_error(exc) from None


async def predicted(runtime: CollectionRuntime, canvas: torch.Tensor) -> Prediction:
    """The model's answer for one canvas, through the collection's batcher (503 while the
    model is being replaced)."""
    try:
        return await runtime.runner.predict(canvas)
    except BatcherClosedError:
        raise ApiError(503, "the model is being replaced; retry in a moment") from None


def search_for(
    services: Services,
    runtime: CollectionRuntime,
    prediction: Prediction,
    top_k: int,
    filters: dict[str, str],
    label_ranked: bool = True,
) -> tuple[list[Hit], list[Hit], float]:
    """The top-k hits (ranked with the version's label term unless ``label_ranked`` is
    false), the cosine's own top k (what the k-NN vote counts: evidence that does not lean
    on the classifier) and the out-of-distribution score."""

    def top(probabilities: np.ndarray | None) -> list[Hit]:
        return runtime.index.search(
            services.store,
            prediction.embedding[np.newaxis, :],
            checkpoint_sha256=runtime.runner.sha256,
            top_k=top_k,
            filters=filters or None,
            probabilities=probabilities,
        )[0]

    label_term = label_ranked and runtime.index.ranking.active
    hits = top(prediction.probabilities[np.newaxis, :] if label_term else None)
    by_cosine = top(None) if label_term else hits
    return hits, by_cosine, runtime.ood.score(prediction.features)


def knn_vote(runtime: CollectionRuntime, hits: list[Hit]) -> list[VoteOut]:
    """The labels among the labelled hits (an unlabelled case has no say in the vote)."""
    labelled = [hit for hit in hits if hit.case.labelled]
    counts: Counter[str] = Counter(code for hit in labelled for code in set(hit.case.labels))
    total = max(len(labelled), 1)
    return [
        VoteOut(code=code, name=runtime.label_name(code), count=n, fraction=n / total)
        for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def index_out(runtime: CollectionRuntime, label_ranked: bool = True) -> QueryIndexOut:
    """The active version, what its scores mean and what ranked the cases."""
    calibration = runtime.index.calibration
    ranking = runtime.index.ranking
    space = "centred cosine" if runtime.index.centre is not None else "cosine"
    return QueryIndexOut(
        label_weight=ranking.weight if label_ranked else 0.0,
        ranking=ranking.describe(space) if label_ranked else space,
        collection=runtime.name,
        version=runtime.version,
        size=runtime.size,
        factory=runtime.index.version.factory,
        centred=runtime.index.centre is not None,
        match_calibration=None
        if calibration is None
        else MatchCalibrationOut(
            rule=calibration.rule,
            labelled_cases=calibration.labelled_cases,
            queries=calibration.queries,
            pairs=calibration.pairs,
            neighbours=calibration.neighbours,
            base_rate=calibration.base_rate,
            queries_from=calibration.queries_from,
            reads=calibration.reads,
        ),
    )


def predictions_out(runtime: CollectionRuntime, probabilities: np.ndarray) -> list[PredictionOut]:
    labels = runtime.runner.meta.labels
    order = np.argsort(-probabilities, kind="stable")
    return [
        PredictionOut(
            code=labels.codes[i], name=labels.names[i], probability=float(probabilities[i])
        )
        for i in order
    ]


def vote_basis(hits: list[Hit]) -> VoteBasisOut:
    labelled = sum(1 for hit in hits if hit.case.labelled)
    return VoteBasisOut(labelled_cases=labelled, unlabelled_cases=len(hits) - labelled)


async def query_parameters(
    request: Request, given: dict[str, Any], form_uids: dict[str, str | None]
) -> tuple[Reference | None, dict[str, Any]]:
    """The image reference and the query's parameters: from the form, or (a JSON body)
    the body's, which must not repeat one of the query string."""
    if not is_json(request):
        return reference_of(form_uids), given
    body = await json_body(request, QueryReferenceIn)
    extra = body.model_dump(exclude_unset=True, exclude=set(form_uids))
    repeated = sorted(name for name in extra if name in request.query_params)
    if repeated:
        raise ApiError(
            422, f"{', '.join(repeated)} given both in the query string and in the JSON body"
        )
    extra = {name: value for name, value in extra.items() if value is not None}
    return reference_of(body.model_dump()), given | extra


@router.post(
    "/query",
    response_model=QueryOut,
    responses=QUERY_ERRORS,
    summary="Classify an image and find the most similar archived cases",
    description="The image is an uploaded `file`, or an instance of the PACS named by "
    "`study_uid`, `series_uid` and `instance_uid` (form fields, or a JSON body that may "
    "also carry the query-string parameters).",
    openapi_extra=json_alternative(QueryReferenceIn),
)
async def query(
    request: Request,
    services: ServicesDep,
    file: ImageUpload = None,
    study_uid: StudyUid = None,
    series_uid: SeriesUid = None,
    instance_uid: InstanceUid = None,
    top_k: Annotated[int, Query(ge=1, le=100, description="similar cases to return")] = 10,
    collection: Annotated[
        str | None, Query(max_length=64, description="default: the only or default collection")
    ] = None,
    label: Annotated[
        str | None, Query(max_length=64, description="only cases with this label code")
    ] = None,
    split: Annotated[
        str | None, Query(max_length=16, description="only cases of this split (train, …)")
    ] = None,
    filter: Annotated[
        list[str],
        Query(
            max_length=MAX_FILTERS,
            description="metadata filters key:value, e.g. modality:CR (key: 1–64 letters, "
            f"digits, '_' or '-'; value: at most {MAX_FILTER_VALUE} characters)",
        ),
    ] = [],  # noqa: B006 - FastAPI copies defaults
    preview: Annotated[
        bool, Query(description="include a PNG preview of the decoded image (the viewer)")
    ] = False,
    explain: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_EXPLAINED,
            description="explain the top N cases: maps of the regions that raise each similarity",
        ),
    ] = 0,
    label_ranking: Annotated[
        bool,
        Query(
            description="rank with the index version's label term (index.ranking; a no-op "
            "where its λ is 0); false: by the cosine alone, the look-alikes of any diagnosis"
        ),
    ] = True,
) -> Response:
    started = time.perf_counter()
    reference, given = await query_parameters(
        request,
        {"top_k": top_k, "collection": collection, "label": label, "split": split}
        | {"filter": filter, "preview": preview, "explain": explain}
        | {"label_ranking": label_ranking},
        {"study_uid": study_uid, "series_uid": series_uid, "instance_uid": instance_uid},
    )
    image = chosen_image(file, reference)
    top_k, collection, preview, explain, label_ranked = (
        given[k] for k in ("top_k", "collection", "preview", "explain", "label_ranking")
    )
    runtime = runtime_for(services, collection)  # one snapshot for the whole request
    filters = parse_filters(given["label"], given["split"], given["filter"])
    decoded, canvas = await decoded_upload(services, runtime, image)
    decoded_at = time.perf_counter()
    prediction = await predicted(runtime, canvas)
    embedded_at = time.perf_counter()
    try:
        hits, by_cosine, score = await services.run(
            search_for, services, runtime, prediction, top_k, filters, label_ranked
        )
    except (SearchError, StoreError) as exc:
        raise ApiError(400, str(exc)) from None
    searched_at = time.perf_counter()
    explanations: dict[int, ExplanationOut | None] = {}
    if explain:
        try:
            explanations = await services.run(
                hit_explanations, runtime, canvas, prediction, hits[:explain], services.limits
            )
        except ExplanationUnsupportedError as exc:
            raise ApiError(501, str(exc)) from None
        services.metrics.stage.labels("explain").observe(time.perf_counter() - searched_at)

    metrics = services.metrics
    metrics.stage.labels("decode").observe(decoded_at - started)
    metrics.stage.labels("embed").observe(embedded_at - decoded_at)
    metrics.stage.labels("search").observe(searched_at - embedded_at)
    flagged = runtime.ood.is_flagged(score)
    if flagged:
        metrics.ood_flagged.labels(runtime.name).inc()
    preview_url = None
    if preview:
        png = await services.run(render_preview, decoded.pixels, PREVIEW_PX)
        preview_url = "data:image/png;base64," + base64.b64encode(png).decode()
    height, width = decoded.pixels.shape[:2]
    meta = runtime.runner.meta.model
    root = request.scope.get("root_path", "")
    answer = QueryOut(
        request_id=request_id_var.get(),
        model=ModelOut(
            name=f"vit-{meta.variant}" + (" multi-scale" if meta.multiscale else " single-scale"),
            checkpoint_sha256=runtime.runner.sha256,
            image_size=runtime.runner.image_size,
        ),
        index=index_out(runtime, label_ranked),
        task=runtime.info.task,  # type: ignore[arg-type]
        predictions=predictions_out(runtime, prediction.probabilities),
        cases=[
            HitOut(
                rank=h.rank,
                score=h.score,
                match_probability=h.match_probability,
                explanation=explanations.get(h.case.id),
                **case_fields(runtime, h.case, root, services.settings.viewer_url_template),
            )
            for h in hits
        ],
        knn_vote=knn_vote(runtime, by_cosine),
        knn_vote_basis=vote_basis(by_cosine),
        out_of_distribution=OodOut(
            flagged=flagged,
            score=score,
            threshold=runtime.ood.threshold if np.isfinite(runtime.ood.threshold) else None,
        ),
        query=QueryImageOut(
            format=decoded.source_format, width=width, height=height, preview=preview_url
        ),
        timings=TimingsOut(
            decode_ms=(decoded_at - started) * 1e3,
            embed_ms=(embedded_at - decoded_at) * 1e3,
            search_ms=(searched_at - embedded_at) * 1e3,
            total_ms=(time.perf_counter() - started) * 1e3,
        ),
    )
    # built and checked once here; returning a Response skips FastAPI's second validation
    return Response(answer.model_dump_json(), media_type="application/json")
