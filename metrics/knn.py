"""Classification by k-NN vote: class scores from the top-k retrieved gallery items.

Single-label: the fraction of the k neighbours of each class (the scores sum to 1). A tie for
the most votes goes to the class with the larger summed similarity when similarities are
given, and otherwise (or if still tied) to the class of the higher-ranked neighbour; the
winner's score is raised by :data:`TIE_NUDGE` (then the row renormalised) so that argmax
picks it. Multi-label: the fraction of the k neighbours having each finding (used as
scores; >= 0.5 predicts it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from labels import Task

__all__ = ["TIE_NUDGE", "knn_vote"]

TIE_NUDGE = 1e-6
"""Score added to the winner of a tied single-label k-NN vote (far below 1/k)."""


def knn_vote(
    ranking: npt.ArrayLike,
    gallery_targets: npt.ArrayLike,
    *,
    k: int,
    num_classes: int,
    task: Task,
    similarities: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """``(Q, C)`` class scores from the top ``k`` of each ranking (see the module docstring).

    ``ranking`` is ``(Q, >= k)`` gallery indices, most similar first (fewer columns → all are
    used); ``similarities`` (same shape, optional) breaks single-label ties.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.asarray(ranking)
    if order.ndim != 2 or order.shape[1] == 0:
        raise ValueError(f"ranking must be (Q, >= 1), got shape {order.shape}")
    top = order[:, :k]  # (Q, k')
    k_used = top.shape[1]
    if task is Task.MULTI_LABEL:
        rows = np.asarray(gallery_targets) > 0  # (G, C)
        if rows.ndim != 2 or rows.shape[1] != num_classes:
            raise ValueError(f"gallery_targets must be (G, {num_classes}), got {rows.shape}")
        return rows[top].mean(axis=1, dtype=np.float64)  # (Q, C)

    classes = np.asarray(gallery_targets).astype(np.intp)[top]  # (Q, k')
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"gallery class ids must lie in [0, {num_classes})")
    votes = classes[:, :, None] == np.arange(num_classes)[None, None, :]  # (Q, k', C)
    counts = votes.sum(axis=1)  # (Q, C)
    candidates = counts == counts.max(axis=1, keepdims=True)
    tied = candidates.sum(axis=1) > 1
    if similarities is not None:
        sims = np.asarray(similarities, dtype=np.float64)[:, :k_used]
        summed = np.where(votes, sims[:, :, None], 0.0).sum(axis=1)  # (Q, C)
        best = np.where(candidates, summed, -np.inf).max(axis=1, keepdims=True)
        candidates &= summed == best
    first_rank = np.where(votes.any(axis=1), votes.argmax(axis=1), k_used)  # (Q, C)
    winner = np.where(candidates, first_rank, k_used + 1).argmin(axis=1)  # (Q,)
    scores = counts / float(k_used)
    rows_tied = np.flatnonzero(tied)
    scores[rows_tied, winner[rows_tied]] += TIE_NUDGE
    return scores / scores.sum(axis=1, keepdims=True)
