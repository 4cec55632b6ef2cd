"""Request and response bodies of the HTTP API (separate from the SQL tables)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"  # a DICOM UID: digits and dots (dicomweb.refs)


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong, in a sentence")
    request_id: str = Field(description="quote it when reporting a problem")


class ModelOut(BaseModel):
    name: str = Field(description="model variant, e.g. vit-small multi-scale")
    checkpoint_sha256: str
    image_size: tuple[int, int]


class MatchCalibrationOut(BaseModel):
    """How the version's match probability was fitted (docs/service.md, "Scores")."""

    rule: str = Field(description="what 'shares the query's diagnosis' means for this task")
    labelled_cases: int = Field(description="the version's labelled cases it was fitted on")
    queries: int = Field(description="cases sampled as queries (leave-one-group-out)")
    pairs: int = Field(description="(query, neighbour) pairs: each query's top neighbours")
    neighbours: int = Field(description="neighbours per query")
    base_rate: float = Field(description="share of those pairs with the same diagnosis")
    queries_from: str = Field(
        description="'held-out cases' (outside the training split, as new images are) or "
        "'all labelled cases' (too few held out: the probability then promises more)"
    )
    reads: str = Field(
        description="the cosine the probability is read at: 'raw cosine' (the model's own "
        "embeddings) or 'search score' (the ranking score; versions built before 'reads')"
    )


class IndexOut(BaseModel):
    collection: str
    version: int
    size: int = Field(description="cases in the active index version")
    factory: str = Field(description="FAISS index type")


class QueryIndexOut(IndexOut):
    """The version that answered a query, and what its scores mean."""

    centred: bool = Field(
        description="scores are cosines after centring on the mean of the version's "
        "embeddings (false: the model's raw cosines)"
    )
    match_calibration: MatchCalibrationOut | None = Field(
        description="how the cases' match_probability was fitted; null: the version has none "
        "(an unlabelled collection, or fewer than 50 labelled cases)"
    )
    label_weight: float = Field(
        ge=0,
        description="λ of the label-aware ranking that ordered this answer, chosen on the "
        "version's held-out cases (0: by the cosine alone, because the version has no label "
        "term or the request asked label_ranking=false; docs/service.md, 'How the cases are "
        "ranked')",
    )
    ranking: str = Field(
        description="what ordered this answer's cases: the cosine, or the cosine + λ × log "
        "P(the query has the case's diagnosis) by the model's class probabilities; a case's "
        "score stays its cosine, so with λ > 0 the scores need not fall with the rank"
    )


class LabelOut(BaseModel):
    code: str
    name: str


class PredictionOut(LabelOut):
    probability: float = Field(ge=0, le=1)


class DicomRefOut(BaseModel):
    study_uid: str = Field(description="StudyInstanceUID (a pseudonymous identifier)")
    series_uid: str = Field(description="SeriesInstanceUID")
    instance_uid: str = Field(description="SOPInstanceUID")


class CaseOut(BaseModel):
    case_id: int
    collection: str
    labels: list[LabelOut]
    labelled: bool = Field(
        description="false for a case no label table names (its labels are then empty)"
    )
    split: str
    metadata: dict[str, Any]
    image_url: str
    thumbnail_url: str
    dicom: DicomRefOut | None = Field(
        description="the PACS instance the case was indexed from (null: not from a PACS)"
    )
    viewer_url: str | None = Field(
        description="the case in the clinical viewer (MEDRET_VIEWER_URL_TEMPLATE; null "
        "when unset or the case is not from a PACS)"
    )


class MapOut(BaseModel):
    grid: list[list[float]] = Field(
        description="contribution (integrated gradients, negatives as 0), 0 to 1 (1: the "
        "largest), on the finest patch grid of the model's canvas: "
        "cell (r, c) covers canvas pixels [r·p, (r+1)·p) × [c·p, (c+1)·p), p = patch_size"
    )
    overlay: str = Field(
        description="PNG data URL: the letterboxed canvas with the map as a heat overlay"
    )


class ClassMapOut(MapOut):
    code: str = Field(description="the class explained: the query's most probable one")
    name: str


class ExplanationOut(BaseModel):
    case_id: int
    collection: str
    score: float = Field(
        description="the cosine similarity explained: the /query score (centred like it)"
    )
    method: str
    patch_size: int = Field(description="canvas pixels per grid cell, each way")
    query_map: MapOut = Field(description="regions of the query that raise the score")
    case_map: MapOut = Field(description="regions of the case that raise the score")


class ExplainOut(ExplanationOut):
    request_id: str
    class_map: ClassMapOut = Field(
        description="regions of the query that raise the logit of its top class"
    )
    explain_ms: float


class HitOut(CaseOut):
    rank: int = Field(ge=1)
    score: float = Field(
        description="cosine similarity of the query's and the case's embeddings, -1 to 1, "
        "in the index version's space (centred on its mean when index.centred); it ranks the "
        "cases, with the label term of index.ranking when that has one, but its value alone "
        "is not a probability"
    )
    match_probability: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="P(the case shares the query's diagnosis | raw cosine): the share of case "
        "pairs at this raw cosine with the same diagnosis (one-label task: the same label; "
        "multi-label: a finding in common, or both without any), fitted on this index "
        "version's own labelled cases, leave-one-group-out (a case's own patient/lesion left "
        "out). The raw cosine is that of the model's own embeddings, before centring: the "
        "cases are ranked by score, but the probability reads the raw cosine, which tells "
        "diagnoses apart better, so a lower-ranked case can have the higher probability. It "
        "describes the archive, not this patient: not a diagnosis. Null when the version "
        "has no calibration (unlabelled or fewer than 50 labelled cases) or the case is "
        "unlabelled",
    )
    explanation: ExplanationOut | None = Field(
        None,
        description="with ?explain=N, for the top N cases: the regions of both images that "
        "raise the similarity "
        "(null otherwise, or when the case's image cannot be read)",
    )


class VoteOut(LabelOut):
    count: int
    fraction: float = Field(description="share of the retrieved labelled cases with this label")


class VoteBasisOut(BaseModel):
    labelled_cases: int = Field(description="retrieved cases the k-NN vote counts")
    unlabelled_cases: int = Field(description="retrieved cases left out of it: no label")


class OodOut(BaseModel):
    flagged: bool = Field(description="the image is unlike anything in this collection")
    score: float = Field(
        description="Mahalanobis distance of the image's features from the collection's"
    )
    threshold: float | None = Field(
        description="scores above it are flagged (null: too few cases to calibrate)"
    )


class QueryImageOut(BaseModel):
    format: str
    width: int
    height: int
    preview: str | None = Field(None, description="PNG data URL of the decoded image")


class TimingsOut(BaseModel):
    decode_ms: float
    embed_ms: float
    search_ms: float
    total_ms: float


class QueryOut(BaseModel):
    request_id: str
    model: ModelOut
    index: QueryIndexOut
    task: Literal["single_label", "multi_label"]
    predictions: list[PredictionOut] = Field(description="every class, most probable first")
    cases: list[HitOut]
    knn_vote: list[VoteOut] = Field(
        description="labels among the labelled cases of the cosine's own top k: the retrieved "
        "cases when they are ranked by the cosine; with a label term (index.label_weight > 0) "
        "the cases the cosine alone would have returned, so the vote never leans on the "
        "classifier it stands beside"
    )
    knn_vote_basis: VoteBasisOut = Field(
        description="how many retrieved cases the vote counts (unlabelled ones are left out)"
    )
    out_of_distribution: OodOut
    query: QueryImageOut
    timings: TimingsOut


class ReferenceIn(BaseModel):
    """An image named by its UIDs, fetched from the PACS at MEDRET_DICOMWEB_URL."""

    model_config = ConfigDict(extra="forbid")

    study_uid: str = Field(max_length=64, pattern=UID_PATTERN)
    series_uid: str = Field(max_length=64, pattern=UID_PATTERN)
    instance_uid: str = Field(max_length=64, pattern=UID_PATTERN)


class QueryReferenceIn(ReferenceIn):
    """``POST /query`` as JSON: the UIDs and, optionally, what the query string takes."""

    top_k: int | None = Field(None, ge=1, le=100)
    collection: str | None = Field(None, max_length=64)
    label: str | None = Field(None, max_length=64)
    split: str | None = Field(None, max_length=16)
    filter: list[str] | None = Field(None, max_length=20)
    preview: bool | None = None
    explain: int | None = Field(None, ge=0, le=10)
    label_ranking: bool | None = None


class CollectionOut(BaseModel):
    name: str
    task: str
    version: int
    size: int
    labels: list[LabelOut]
    checkpoint_sha256: str
    ood_threshold: float | None


class ReindexIn(BaseModel):
    collection: str = Field(min_length=1, max_length=64, examples=["derm"])
    source: str = Field(
        min_length=1,
        max_length=4096,
        description="absolute path of the archive on the server, inside MEDRET_ARCHIVE_ROOTS",
    )
    mode: Literal["full", "add"] = "full"
    checkpoint: str | None = Field(
        None, max_length=4096, description="checkpoint path (default: the collection's own)"
    )
    layout: str = Field("auto", max_length=32, pattern=r"^[a-z0-9_]+$")


class FollowIn(BaseModel):
    collection: str = Field(min_length=1, max_length=64, examples=["cxr"])
    source: str = Field(
        min_length=1,
        max_length=4096,
        description="the PACS, dicomweb+http(s)://…, on the server of MEDRET_DICOMWEB_URL",
    )
    checkpoint: str | None = Field(
        None, max_length=4096, description="checkpoint path (default: the collection's own)"
    )
    labels: str | None = Field(
        None, max_length=4096, description="a label table CSV inside MEDRET_ARCHIVE_ROOTS"
    )


class FollowerOut(BaseModel):
    collection: str
    source: str
    pid: int
    since: dt.datetime


# A job as the admin API shows it: the fields of indexer.store.JobInfo an operator needs,
# under the same names (job_id is its id), and where to poll it. job_out() in
# app/api/routes/admin.py fills it from a JobInfo by name; tests/app/test_job_schema.py
# checks the names, types and states against JobInfo. (No docstring: it would change the
# OpenAPI document.)
class JobOut(BaseModel):
    job_id: str
    kind: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: float
    counts: dict[str, Any]
    errors: list[str]
    message: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    status_url: str


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    ready: bool
    collections: dict[str, IndexOut]
    problems: dict[str, str]
