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
from app.runtime import CollectionRuntime
from app.schemas import ClassMapOut, ExplanationOut, MapOut
from imaging.decode import DecodeLimits
from imaging.limits import holding_reservations
from indexer.search import Hit
from indexer.store import CaseInfo
from model.explain import explain_similarity
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


def similarity_explanation(
    runtime: CollectionRuntime,
    query_canvas: torch.Tensor,
    case: CaseInfo,
    canvas: torch.Tensor,
) -> ExplanationOut:
    """Where the query's and the case's similarity comes from, on both canvases."""
    return _explained(runtime, query_canvas, case, canvas, None)[0]


def full_explanation(
    runtime: CollectionRuntime,
    query_canvas: torch.Tensor,
    case: CaseInfo,
    canvas: torch.Tensor,
    probabilities: np.ndarray,
) -> tuple[ExplanationOut, ClassMapOut]:
    """The similarity maps and what drives the query's most probable class, from one
    forward of the pair (:func:`model.explain.explain_similarity` with ``class_index``)."""
    top = int(np.argmax(probabilities))
    similarity, grid = _explained(runtime, query_canvas, case, canvas, top)
    assert grid is not None
    drawn = map_out(grid, query_canvas, similarity.patch_size)
    code = runtime.runner.meta.labels.codes[top]
    return similarity, ClassMapOut(**drawn.model_dump(), code=code, name=runtime.label_name(code))


def _explained(
    runtime: CollectionRuntime,
    query_canvas: torch.Tensor,
    case: CaseInfo,
    canvas: torch.Tensor,
    class_index: int | None,
) -> tuple[ExplanationOut, np.ndarray | None]:
    network = explained_network(runtime)
    runner = runtime.runner
    found = explain_similarity(
        network,
        query_canvas,
        canvas,
        runner.meta.preprocessing,
        runner.device,
        class_index=class_index,
        centre=runtime.index.centre,  # the score explained is the one /query returns
    )
    patch = network.cfg.patch_size
    similarity = ExplanationOut(
        case_id=case.id,
        collection=runtime.name,
        score=found.score,
        method=found.method,
        patch_size=patch,
        query_map=map_out(found.query_map, query_canvas, patch),
        case_map=map_out(found.case_map, canvas, patch),
    )
    return similarity, found.class_map


def hit_explanations(
    runtime: CollectionRuntime,
    query_canvas: torch.Tensor,
    hits: Sequence[Hit],
    limits: DecodeLimits,
) -> dict[int, ExplanationOut | None]:
    """Explanations of the query's similarity to each hit, by case id; None for a case
    whose archived image cannot be read (the hit is still answered)."""
    explanations: dict[int, ExplanationOut | None] = {}
    for hit in hits:
        try:
            canvas = case_canvas(runtime, hit.case, limits)
        except CaseImageError as exc:
            log.warning("case %d is not explained: %s", hit.case.id, exc.detail)
            explanations[hit.case.id] = None
            continue
        explanations[hit.case.id] = similarity_explanation(runtime, query_canvas, hit.case, canvas)
    return explanations
