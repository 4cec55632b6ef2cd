"""Classification by k-NN vote: majorities, tie breaks and multi-label fractions."""

from __future__ import annotations

import numpy as np
import pytest

from labels import Task
from metrics.knn import TIE_NUDGE, knn_vote


def test_knn_vote_majority() -> None:
    gallery = np.array([0, 1, 1, 2, 0])
    scores = knn_vote(
        np.array([[1, 2, 0, 3, 4]]), gallery, k=3, num_classes=3, task=Task.SINGLE_LABEL
    )
    np.testing.assert_allclose(scores, [[1 / 3, 2 / 3, 0.0]])


def test_knn_vote_tie_goes_to_higher_ranked_neighbour_or_larger_similarity() -> None:
    gallery = np.array([0, 1, 1, 2, 0])
    ranking = np.array([[1, 0, 4, 2]])  # classes 1, 0, 0, 1: two votes each
    scores = knn_vote(ranking, gallery, k=4, num_classes=3, task=Task.SINGLE_LABEL)
    assert scores.argmax(axis=1).tolist() == [1]  # class of the rank-1 neighbour
    np.testing.assert_allclose(scores, [[0.5, 0.5, 0.0]], atol=2 * TIE_NUDGE)
    assert scores.sum() == pytest.approx(1.0)
    sims = np.array([[0.9, 0.85, 0.8, 0.1]])  # class 0 sums 1.65, class 1 sums 1.0
    with_sims = knn_vote(
        ranking, gallery, k=4, num_classes=3, task=Task.SINGLE_LABEL, similarities=sims
    )
    assert with_sims.argmax(axis=1).tolist() == [0]


def test_knn_vote_multi_label_fractions() -> None:
    gallery = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1]])
    scores = knn_vote(np.array([[1, 0, 2, 3]]), gallery, k=3, num_classes=3, task=Task.MULTI_LABEL)
    np.testing.assert_allclose(scores, [[2 / 3, 1 / 3, 0.0]])
