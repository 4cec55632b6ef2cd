"""Search parameters: the defaults for each kind of index, setting them, per-query overrides.

Parameters are ``faiss.ParameterSpace`` names and values (``efSearch``, ``nprobe``,
``k_factor_rf``, …); the sidecar records those in force.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import faiss

from indexer.vectors import anatomy
from indexer.vectors.errors import VectorIndexError

HNSW_EF_SEARCH = 128
"""Default efSearch for HNSW32 (bench/index_speed_search.py sweeps it: recall@10 ≥ 0.95)."""
IVF_REFINE_K_FACTOR = 8
"""The refine stage re-ranks ``k × 8`` IVF-PQ candidates with the finer codes."""


def default_nprobe(nlist: int) -> int:
    """Inverted lists probed by default: nlist/64 clipped to [16, 256] (and to nlist)."""
    return min(nlist, 256, max(16, nlist // 64))


def default_search_params(index: Any) -> dict[str, int | float]:
    """The search parameters :func:`~indexer.vectors.factory.choose_factory` would give this
    kind of index.

    HNSW: ``efSearch = 128`` (FAISS's own default, 16, misses recall@10 ≥ 0.95 at scale);
    IVF: ``nprobe`` = :func:`default_nprobe`; a refine stage: ``k_factor_rf = 8`` (FAISS's
    default, 1, re-ranks nothing).
    """
    params: dict[str, int | float] = {}
    kind = anatomy.kind(index)
    ivf = anatomy.ivf(index)
    if kind == "graph":
        params["efSearch"] = HNSW_EF_SEARCH
    elif kind == "ivf" and ivf is not None:
        params["nprobe"] = default_nprobe(int(ivf.nlist))
    if anatomy.has_refine(index):
        params["k_factor_rf"] = IVF_REFINE_K_FACTOR
    return params


def apply_search_params(index: Any, params: Mapping[str, int | float], factory: str) -> None:
    """Set ``params`` on ``index`` through ``faiss.ParameterSpace`` (CPU index)."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError as err:
            raise VectorIndexError(
                f"search parameter {name}={value} does not apply to a {factory!r} index"
            ) from err


def selector_params(
    index: Any, sel: Any, keep: list[Any], *, ef_search: int | None, nprobe: int | None
) -> Any:
    """``SearchParameters`` for ``index.search`` restricted to ``sel`` (ids as callers see them).

    Mirrors the index's nesting: an IDMap translates ``sel`` to row numbers
    (``IDSelectorTranslated``), a pre-transform or refine stage passes typed parameters to
    the index below it, and the core gets ``SearchParametersHNSW`` (efSearch),
    ``SearchParametersIVF`` (nprobe) or plain ``SearchParameters`` — carrying the index's own
    settings unless overridden. Every object is appended to ``keep``: the C++ side holds raw
    pointers, so the Python objects must outlive the search.
    """
    sub = faiss.downcast_index(index)
    params: Any
    if isinstance(sub, faiss.IndexIDMap):
        # the C++ vector itself: a numpy copy would leave the selector a dangling reference
        translated = faiss.IDSelectorTranslated(cast(Any, sub.id_map), sel)
        keep.append(translated)
        return selector_params(sub.index, translated, keep, ef_search=ef_search, nprobe=nprobe)
    if isinstance(sub, faiss.IndexPreTransform):
        inner = selector_params(sub.index, sel, keep, ef_search=ef_search, nprobe=nprobe)
        params = faiss.SearchParametersPreTransform()
        params.index_params = inner
    elif isinstance(sub, faiss.IndexRefine):
        inner = selector_params(sub.base_index, sel, keep, ef_search=ef_search, nprobe=nprobe)
        params = faiss.IndexRefineSearchParameters()
        params.k_factor = sub.k_factor
        params.base_index_params = inner
    elif isinstance(sub, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # not in the stubs
        params.efSearch = int(ef_search or sub.hnsw.efSearch)
        params.sel = sel
    elif isinstance(sub, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = int(nprobe or sub.nprobe)
        params.max_codes = sub.max_codes
        params.sel = sel
    else:
        params = faiss.SearchParameters()
        params.sel = sel
    keep.append(params)
    return params
