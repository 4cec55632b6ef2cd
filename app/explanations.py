"""Region-level explanations as the API answers them: maps of a query and a case for their
similarity score, and of the query for its top class (the method is
:mod:`model.explain`). The functions block; the routes run them in the query thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from app.images import CaseImageError, case_pixels
from app.overlays import overlay_png, png_data_url
from app.runner import Prediction
from app.runtime import CollectionRuntime
from app.schemas import ClassMapOut, ExplanationOut, MapOut
from imaging.decode import DecodeLimits
from imaging.limits import holding_reservations
from indexer.search import Hit
from indexer.store import CaseInfo
from model.explain import QueryExplainer, explaining
from model.vit import MultiScaleViT

log = logging.getLogger(__name__)

GRID_DECIMALS = 4  # the grid's values in the JSON: finer than any picture shows


class ExplanationUnsupportedError(Exception):
    """The collection's network has no patch tokens to explain."""


def explained_network(runtime: CollectionRuntime) -> MultiScaleViT:
    network = runtime.runner.loaded.model
    if not isinstance(network, MultiScaleViT):  # EfficientNet-Lite0 has no patch tokens
        raise ExplanationUnsupportedError(
            f"collection {runtime.name!r} is served by a network without patch tokens; "
            "region explanations need the ViT"
        )
    return network


def case_canvas(runtime: CollectionRuntime, case: CaseInfo, limits: DecodeLimits) -> torch.Tensor:
    """The case's letterboxed canvas, from its archived image (:class:`CaseImageError`)."""
    with holding_reservations():  # the resize to the canvas counts against the budget too
        return runtime.runner.canvas(case_pixels(case, limits))


def map_out(grid: np.ndarray, canvas: torch.Tensor, patch_size: int) -> MapOut:
    return MapOut(
        grid=np.round(grid.astype(np.float64), GRID_DECIMALS).tolist(),
        overlay=png_data_url(overlay_png(canvas, grid, patch_size)),
    )


def full_explanation(
    runtime: CollectionRuntime,
    query_canvas: torch.Tensor,
    prediction: Prediction,
    case: CaseInfo,
    canvas: torch.Tensor,
) -> tuple[ExplanationOut, ClassMapOut]:
    """The similarity maps of the query and one case, and what drives the query's most
    probable class, from one path through the encoder per canvas (:mod:`model.explain`)."""
    top = int(np.argmax(prediction.probabilities))
    network = explained_network(runtime)
    with explaining(network):
        explainer = _explainer(runtime, network, query_canvas, prediction)
        similarity = _similarity(runtime, explainer, query_canvas, case, canvas)
        grid = explainer.class_map(top)
    drawn = map_out(grid, query_canvas, similarity.patch_size)
    code = runtime.runner.meta.labels.codes[top]
    return similarity, ClassMapOut(**drawn.model_dump(), code=code, name=runtime.label_name(code))


def hit_explanations(
    runtime: CollectionRuntime,
    query_canvas: torch.Tensor,
    prediction: Prediction,
    hits: Sequence[Hit],
    limits: DecodeLimits,
) -> dict[int, ExplanationOut | None]:
    """Explanations of the query's similarity to each hit, by case id; None for a case
    whose archived image cannot be read (the hit is still answered). The query's side is
    prepared once for all of them."""
    network = explained_network(runtime)
    explanations: dict[int, ExplanationOut | None] = {}
    if not hits:  # nothing to explain: the query's path is not worth building
        return explanations
    with explaining(network):
        explainer = _explainer(runtime, network, query_canvas, prediction)
        for hit in hits:
            try:
                canvas = case_canvas(runtime, hit.case, limits)
            except CaseImageError as exc:
                log.warning("case %d is not explained: %s", hit.case.id, exc.detail)
                explanations[hit.case.id] = None
                continue
            explanations[hit.case.id] = _similarity(
                runtime, explainer, query_canvas, hit.case, canvas
            )
    return explanations


def _explainer(
    runtime: CollectionRuntime,
    network: MultiScaleViT,
    query_canvas: torch.Tensor,
    prediction: Prediction,
) -> QueryExplainer:
    runner = runtime.runner
    return QueryExplainer(
        network,
        query_canvas,
        runner.meta.preprocessing,
        runner.device,
        centre=runtime.index.centre,  # the score explained is the one /query returns
        query_embedding=prediction.embedding,  # as /query ranked with it
    )


def _similarity(
    runtime: CollectionRuntime,
    explainer: QueryExplainer,
    query_canvas: torch.Tensor,
    case: CaseInfo,
    canvas: torch.Tensor,
) -> ExplanationOut:
    found = explainer.similarity(canvas)
    patch = explainer.network.cfg.patch_size
    return ExplanationOut(
        case_id=case.id,
        collection=runtime.name,
        score=found.score,
        method=found.method,
        patch_size=patch,
        query_map=map_out(found.query_map, query_canvas, patch),
        case_map=map_out(found.case_map, canvas, patch),
    )
