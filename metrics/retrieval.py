"""Retrieval metrics: ranking a gallery by similarity, P@K, R@K and mAP (docs/training.md).

Numpy only, so that both :mod:`training` (evaluation reports) and :mod:`indexer` (checking a
built index) can use it without importing each other.

Definitions
-----------
Relevance
    *Single-label* data (ISIC-2018: one class per image, targets are ints of shape ``(N,)``):
    a gallery item is relevant to a query when it has the same class.
    *Multi-label* data (ChestX-ray14: targets are 0/1 rows of shape ``(N, C)``): a gallery item
    is relevant when it shares at least one finding with the query. An all-zero row means
    "No Finding" (a normal image); two normal images ARE relevant to each other, a normal and
    an abnormal image are not. This is the rule the training losses use for positive pairs.

Ranking
    For each query the whole gallery is sorted by inner product with the query embedding,
    descending (embeddings are unit-norm, so this is cosine similarity). Ties are broken by
    the gallery index, lower first, so a ranking is deterministic. When the queries *are* the
    gallery (``exclude_self=True``) each query's own item is removed from its ranking, and
    "the gallery" below means the gallery without that item.

Per-query metrics (``rel`` = the relevance of the ranked gallery, ``n_rel`` = its sum)
    ``P@K = rel[:K].sum() / K`` (K is the divisor even when the gallery is shorter than K).
    ``R@K = rel[:K].sum() / n_rel``: relevant-in-top-K over all relevant items in the gallery.
    ``AP = mean over the relevant ranks r of precision@r``, over the FULL ranking.
    A query with no relevant item in the gallery has ``R@K = AP = nan``: it is left out of the
    R@K and mAP averages and counted in :attr:`RetrievalScores.queries_without_relevant`.
    Its P@K is 0 and stays in the P@K averages (nothing relevant was retrieved).

Averages
    *Micro*: the mean over all queries (of those with a defined value, for R@K and mAP).
    *Macro*: the mean over groups of the mean over the queries of that group. Single-label:
    one group per class. Multi-label: a query counts toward each of its findings, and queries
    with no finding form their own group, :data:`NO_FINDING`, which takes part in the macro
    average like a finding (normal images are half of ChestX-ray14, and retrieving normal cases
    for a normal query is part of the job). Groups without queries (or without any defined
    value for a metric) are reported with ``nan`` and left out of the macro average.

Memory: a full ``(Q, G)`` ranking does not fit for ChestX-ray14 sizes, so
:func:`ranking_chunks` yields rankings a block of queries at a time and
:func:`per_query_metrics` + :func:`summarise_retrieval` turn them into scores; :func:`rank_gallery`
and :func:`retrieval_scores` are the whole-array conveniences built on them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from labels import Task

__all__ = [
    "NO_FINDING",
    "RankedChunk",
    "RetrievalScores",
    "average_precision",
    "metric_names",
    "per_query_metrics",
    "precision_at_k",
    "rank_gallery",
    "ranking_chunks",
    "recall_at_k",
    "relevance_matrix",
    "retrieval_scores",
    "summarise_retrieval",
]

NO_FINDING = "No Finding"
"""Name of the macro-average group of multi-label queries whose label row is all zeros."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------- relevance


def _as_label_rows(targets: npt.ArrayLike, name: str) -> BoolArray:
    rows = np.asarray(targets)
    if rows.ndim != 2:
        raise ValueError(f"multi-label {name} must be (N, C) 0/1 rows, got shape {rows.shape}")
    return rows > 0


def _as_class_ids(targets: npt.ArrayLike, name: str) -> IntArray:
    ids = np.asarray(targets)
    if ids.ndim != 1:
        raise ValueError(f"single-label {name} must be (N,) class ids, got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"single-label {name} must be integers, got dtype {ids.dtype}")
    return ids.astype(np.intp, copy=False)


def _no_finding(rows: BoolArray) -> BoolArray:
    """``(N,)`` True where a label row is all zeros ("No Finding")."""
    return np.logical_not(rows.any(axis=1))


def relevance_matrix(
    query_targets: npt.ArrayLike, gallery_targets: npt.ArrayLike, task: Task
) -> BoolArray:
    """Return ``(Q, G)`` booleans: is gallery item ``g`` relevant to query ``q``.

    Single-label targets are int class ids ``(N,)``: relevant = same class. Multi-label targets
    are 0/1 rows ``(N, C)``: relevant = at least one shared finding, or both rows all zero
    ("No Finding" matches "No Finding", never an abnormal image).
    """
    if task is Task.SINGLE_LABEL:
        q_ids = _as_class_ids(query_targets, "query_targets")
        g_ids = _as_class_ids(gallery_targets, "gallery_targets")
        return q_ids[:, None] == g_ids[None, :]
    q_rows = _as_label_rows(query_targets, "query_targets")
    g_rows = _as_label_rows(gallery_targets, "gallery_targets")
    if q_rows.shape[1] != g_rows.shape[1]:
        raise ValueError(
            f"query and gallery label rows differ in width: {q_rows.shape[1]} vs {g_rows.shape[1]}"
        )
    shared = (q_rows.astype(np.float32) @ g_rows.T.astype(np.float32)) > 0  # (Q, G)
    q_normal = _no_finding(q_rows)
    g_normal = _no_finding(g_rows)
    return shared | (q_normal[:, None] & g_normal[None, :])


# --------------------------------------------------------------------------- ranking


class RankedChunk(NamedTuple):
    """Rankings of the queries ``start : start + len(indices)`` (see :func:`ranking_chunks`)."""

    start: int
    indices: IntArray  # (c, G') gallery indices, most similar first
    similarities: npt.NDArray[np.floating]  # (c, G') the inner products in that order


def _as_float_matrix(emb: npt.ArrayLike, name: str) -> npt.NDArray[np.floating]:
    matrix = np.asarray(emb)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        matrix = matrix.astype(np.float32)
    return matrix


def ranking_chunks(
    query_emb: npt.ArrayLike,
    gallery_emb: npt.ArrayLike,
    *,
    exclude_self: bool = False,
    chunk: int = 1024,
) -> Iterator[RankedChunk]:
    """Yield the ranked gallery for ``chunk`` queries at a time (memory ``O(chunk · G)``).

    Order: inner product descending, ties by gallery index ascending. With ``exclude_self``
    (queries and gallery are the same set, row ``i`` is gallery item ``i``) every ranking has
    ``G - 1`` entries and never contains the query itself.
    """
    queries = _as_float_matrix(query_emb, "query_emb")
    gallery = _as_float_matrix(gallery_emb, "gallery_emb")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"embedding widths differ: queries {queries.shape[1]}, gallery {gallery.shape[1]}"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if exclude_self and queries.shape[0] != gallery.shape[0]:
        raise ValueError(
            "exclude_self needs the queries to be the gallery: "
            f"{queries.shape[0]} queries vs {gallery.shape[0]} gallery items"
        )
    num_gallery = gallery.shape[0]
    for start in range(0, queries.shape[0], chunk):
        block = queries[start : start + chunk]
        sims = block @ gallery.T  # (c, G)
        order = np.argsort(-sims, axis=1, kind="stable")  # stable: ties by gallery index
        if exclude_self:
            own = np.arange(start, start + block.shape[0])[:, None]
            order = order[order != own].reshape(block.shape[0], num_gallery - 1)
        yield RankedChunk(
            start=start,
            indices=order.astype(np.intp, copy=False),
            similarities=np.take_along_axis(sims, order, axis=1),
        )


def rank_gallery(
    query_emb: npt.ArrayLike,
    gallery_emb: npt.ArrayLike,
    *,
    exclude_self: bool = False,
    chunk: int = 1024,
) -> IntArray:
    """Return ``(Q, G)`` gallery indices per query, most similar first (``(Q, G-1)`` without self).

    Computed ``chunk`` queries at a time; the result itself is ``Q × G`` integers, so for very
    large evaluations iterate :func:`ranking_chunks` instead.
    """
    parts = [
        ranked.indices
        for ranked in ranking_chunks(query_emb, gallery_emb, exclude_self=exclude_self, chunk=chunk)
    ]
    if not parts:
        width = np.asarray(gallery_emb).shape[0] - int(exclude_self)
        return np.empty((0, max(width, 0)), dtype=np.intp)
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- per-query metrics


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _as_ranked_relevance(ranked_relevance: npt.ArrayLike) -> BoolArray:
    rel = np.asarray(ranked_relevance).astype(bool, copy=False)
    if rel.ndim != 2:
        raise ValueError(f"ranked_relevance must be (Q, G), got shape {rel.shape}")
    return rel


def _divide_or_nan(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def precision_at_k(ranked_relevance: npt.ArrayLike, k: int) -> FloatArray:
    """``(Q,)`` relevant items among the first ``k`` of each ranking, divided by ``k``."""
    _check_k(k)
    rel = _as_ranked_relevance(ranked_relevance)
    return rel[:, :k].sum(axis=1, dtype=np.float64) / k


def recall_at_k(ranked_relevance: npt.ArrayLike, k: int) -> FloatArray:
    """``(Q,)`` relevant items in the first ``k`` over all relevant items; nan if there are none."""
    _check_k(k)
    rel = _as_ranked_relevance(ranked_relevance)
    hits = rel[:, :k].sum(axis=1, dtype=np.float64)
    return _divide_or_nan(hits, rel.sum(axis=1, dtype=np.float64))


def average_precision(ranked_relevance: npt.ArrayLike) -> FloatArray:
    """``(Q,)`` mean of precision@r over the ranks r of the relevant items; nan if there are none.

    The ranking must be complete (every gallery item), or AP is that of a truncated list.
    """
    rel = _as_ranked_relevance(ranked_relevance)
    if rel.shape[1] == 0:
        return np.full(rel.shape[0], np.nan)
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    precision_at_rank = np.cumsum(rel, axis=1, dtype=np.float64) / ranks  # (Q, G)
    summed = np.where(rel, precision_at_rank, 0.0).sum(axis=1)
    return _divide_or_nan(summed, rel.sum(axis=1, dtype=np.float64))


def metric_names(ks: Sequence[int]) -> list[str]:
    """The metric keys, in report order: ``P@k`` for each k, ``R@k`` for each k, ``mAP``."""
    return [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks] + ["mAP"]


def per_query_metrics(
    query_targets: npt.ArrayLike,
    gallery_targets: npt.ArrayLike,
    ranking: npt.ArrayLike,
    *,
    task: Task,
    ks: Sequence[int] = (2, 5, 10),
    chunk: int = 256,
) -> dict[str, FloatArray]:
    """Return metric name → ``(Q,)`` values (see :func:`metric_names`) for full rankings.

    ``ranking`` holds, per query, every gallery index (``G`` columns) or every one but the
    query itself (``G - 1``, the ``exclude_self`` case); "all relevant items" for R@K and AP
    are those the ranking contains.
    """
    for k in ks:
        _check_k(k)
    order = np.asarray(ranking)
    q_targets = np.asarray(query_targets)
    g_targets = np.asarray(gallery_targets)
    num_gallery = g_targets.shape[0]
    if order.ndim != 2 or order.shape[0] != q_targets.shape[0]:
        raise ValueError(
            f"ranking must be (Q, G) with Q = {q_targets.shape[0]}, got shape {order.shape}"
        )
    if order.shape[1] not in (num_gallery, num_gallery - 1):
        raise ValueError(
            f"ranking must list the whole gallery ({num_gallery} items, or {num_gallery - 1} "
            f"without the query itself), got {order.shape[1]} columns"
        )
    values: dict[str, list[FloatArray]] = {name: [] for name in metric_names(ks)}
    for start in range(0, order.shape[0], max(chunk, 1)):
        stop = start + max(chunk, 1)
        relevance = relevance_matrix(q_targets[start:stop], g_targets, task)  # (c, G)
        ranked = np.take_along_axis(relevance, order[start:stop], axis=1)  # (c, G')
        for k in ks:
            values[f"P@{k}"].append(precision_at_k(ranked, k))
            values[f"R@{k}"].append(recall_at_k(ranked, k))
        values["mAP"].append(average_precision(ranked))
    return {
        name: np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
        for name, parts in values.items()
    }


# --------------------------------------------------------------------------- averages


@dataclass(frozen=True)
class RetrievalScores:
    """Averaged retrieval metrics (keys ``P@k``, ``R@k``, ``mAP``; see the module docstring).

    ``per_class`` maps a class code (and, multi-label, :data:`NO_FINDING`) to its metrics plus
    ``"queries"``, the number of queries in that group. Undefined values are ``nan``.
    """

    ks: tuple[int, ...]
    micro: dict[str, float]
    macro: dict[str, float]
    per_class: dict[str, dict[str, float]]
    queries: int
    queries_without_relevant: int


def _mean_or_nan(values: FloatArray) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def _query_groups(
    query_targets: npt.ArrayLike, *, task: Task, codes: Sequence[str]
) -> dict[str, BoolArray]:
    """Group name → ``(Q,)`` membership mask, in report order."""
    if task is Task.MULTI_LABEL:
        rows = _as_label_rows(query_targets, "query_targets")
        if rows.shape[1] != len(codes):
            raise ValueError(f"{rows.shape[1]} label columns but {len(codes)} codes")
        if NO_FINDING in codes:
            raise ValueError(f"{NO_FINDING!r} is reserved for all-zero label rows")
        groups = {code: rows[:, c] for c, code in enumerate(codes)}
        groups[NO_FINDING] = _no_finding(rows)
        return groups
    ids = _as_class_ids(query_targets, "query_targets")
    if ids.size and (ids.min() < 0 or ids.max() >= len(codes)):
        raise ValueError(f"class ids must lie in [0, {len(codes)}), got {ids.min()}..{ids.max()}")
    return {code: ids == c for c, code in enumerate(codes)}


def summarise_retrieval(
    per_query: dict[str, FloatArray],
    query_targets: npt.ArrayLike,
    *,
    task: Task,
    codes: Sequence[str],
    ks: Sequence[int] = (2, 5, 10),
) -> RetrievalScores:
    """Average :func:`per_query_metrics` output into micro, macro and per-class scores."""
    names = metric_names(ks)
    groups = _query_groups(query_targets, task=task, codes=codes)
    per_class: dict[str, dict[str, float]] = {}
    for group, members in groups.items():
        scores = {name: _mean_or_nan(per_query[name][members]) for name in names}
        scores["queries"] = int(members.sum())
        per_class[group] = scores
    macro = {
        name: _mean_or_nan(np.array([scores[name] for scores in per_class.values()]))
        for name in names
    }
    micro = {name: _mean_or_nan(per_query[name]) for name in names}
    return RetrievalScores(
        ks=tuple(int(k) for k in ks),
        micro=micro,
        macro=macro,
        per_class=per_class,
        queries=int(per_query["mAP"].shape[0]),
        queries_without_relevant=int(np.isnan(per_query["mAP"]).sum()),
    )


def retrieval_scores(
    query_targets: npt.ArrayLike,
    gallery_targets: npt.ArrayLike,
    ranking: npt.ArrayLike,
    *,
    task: Task,
    codes: Sequence[str],
    ks: Sequence[int] = (2, 5, 10),
) -> RetrievalScores:
    """Micro, macro and per-class P@K, R@K and mAP of full rankings (see the module docstring)."""
    per_query = per_query_metrics(query_targets, gallery_targets, ranking, task=task, ks=ks)
    return summarise_retrieval(per_query, query_targets, task=task, codes=codes, ks=ks)
