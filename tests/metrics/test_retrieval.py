"""Retrieval metrics on hand-made rankings whose values are computed by hand below."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labels import Task
from metrics.retrieval import (
    NO_FINDING,
    average_precision,
    precision_at_k,
    rank_gallery,
    ranking_chunks,
    recall_at_k,
    relevance_matrix,
    retrieval_scores,
)


def test_precision_recall_ap_by_hand() -> None:
    ranked = np.array(
        [
            [1, 0, 1, 0, 0],  # 2 relevant, at ranks 1 and 3
            [0, 1, 1, 0, 1],  # 3 relevant, at ranks 2, 3 and 5
            [0, 0, 0, 0, 0],  # nothing relevant
        ],
        dtype=bool,
    )
    np.testing.assert_allclose(precision_at_k(ranked, 2), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(precision_at_k(ranked, 5), [0.4, 0.6, 0.0])
    recall2 = recall_at_k(ranked, 2)
    np.testing.assert_allclose(recall2[:2], [0.5, 1 / 3])
    assert math.isnan(recall2[2])
    np.testing.assert_allclose(recall_at_k(ranked, 5)[:2], [1.0, 1.0])
    ap = average_precision(ranked)
    np.testing.assert_allclose(ap[:2], [(1 / 1 + 2 / 3) / 2, (1 / 2 + 2 / 3 + 3 / 5) / 3])
    assert math.isnan(ap[2])


def test_k_beyond_gallery_divides_by_k_and_bad_k_is_refused() -> None:
    ranked = np.array([[1, 1]], dtype=bool)
    assert precision_at_k(ranked, 4)[0] == pytest.approx(0.5)
    assert recall_at_k(ranked, 4)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k must be"):
        precision_at_k(ranked, 0)


def test_single_label_relevance_is_same_class() -> None:
    rel = relevance_matrix(np.array([0, 2]), np.array([2, 0, 0, 1]), task=Task.SINGLE_LABEL)
    np.testing.assert_array_equal(rel, [[False, True, True, False], [True, False, False, False]])


def test_multi_label_relevance_shared_finding_and_no_finding_rule() -> None:
    queries = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
    gallery = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [0, 0, 1]])
    rel = relevance_matrix(queries, gallery, task=Task.MULTI_LABEL)
    np.testing.assert_array_equal(
        rel,
        [
            [True, False, False, False],  # shares finding 0 with item 0 only; normal ≠ abnormal
            [False, True, False, False],  # normal matches normal only
            [True, False, True, False],  # shares 0 with item 0, 1 with item 2
        ],
    )


# Gallery classes [A, A, B, B]; four queries with hand-picked rankings:
#   q0 (A) ranks 0,1,2,3 → rel 1100: P@2 1,  R@2 1,  AP 1
#   q1 (A) ranks 2,0,3,1 → rel 0101: P@2 .5, R@2 .5, AP (1/2 + 2/4)/2 = 1/2
#   q2 (A) ranks 2,3,0,1 → rel 0011: P@2 0,  R@2 0,  AP (1/3 + 2/4)/2 = 5/12
#   q3 (B) ranks 2,3,0,1 → rel 1100: P@2 1,  R@2 1,  AP 1
GALLERY = np.array([0, 0, 1, 1])
QUERIES = np.array([0, 0, 0, 1])
RANKING = np.array([[0, 1, 2, 3], [2, 0, 3, 1], [2, 3, 0, 1], [2, 3, 0, 1]])


def test_micro_and_macro_differ_with_unequal_class_sizes() -> None:
    scores = retrieval_scores(
        QUERIES, GALLERY, RANKING, task=Task.SINGLE_LABEL, codes=["A", "B"], ks=[2]
    )
    assert scores.micro["P@2"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)  # 0.625
    assert scores.macro["P@2"] == pytest.approx(((1 + 0.5 + 0) / 3 + 1) / 2)  # 0.75
    assert scores.micro["R@2"] == pytest.approx(0.625)
    assert scores.micro["mAP"] == pytest.approx((1 + 0.5 + 5 / 12 + 1) / 4)  # 35/48
    assert scores.macro["mAP"] == pytest.approx(((1 + 0.5 + 5 / 12) / 3 + 1) / 2)  # 59/72
    assert scores.per_class["A"]["mAP"] == pytest.approx(23 / 36)
    assert scores.per_class["A"]["queries"] == 3
    assert scores.per_class["B"]["queries"] == 1
    assert scores.queries == 4
    assert scores.queries_without_relevant == 0
    assert scores.ks == (2,)


def test_query_without_relevant_items_is_excluded_from_recall_and_map() -> None:
    queries = np.append(QUERIES, 2)  # class C has no gallery item
    ranking = np.vstack([RANKING, [0, 1, 2, 3]])
    scores = retrieval_scores(
        queries, GALLERY, ranking, task=Task.SINGLE_LABEL, codes=["A", "B", "C"], ks=[2]
    )
    assert scores.queries == 5
    assert scores.queries_without_relevant == 1
    assert scores.micro["P@2"] == pytest.approx(2.5 / 5)  # its P@2 of 0 counts
    assert scores.micro["mAP"] == pytest.approx(35 / 48)  # unchanged: left out
    assert scores.micro["R@2"] == pytest.approx(0.625)
    assert scores.macro["mAP"] == pytest.approx(59 / 72)  # class C has no defined AP
    assert scores.macro["P@2"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert math.isnan(scores.per_class["C"]["mAP"])
    assert scores.per_class["C"]["queries"] == 1


def test_multi_label_macro_counts_a_query_for_each_finding_and_groups_no_finding() -> None:
    gallery = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    queries = np.array([[1, 1], [0, 0], [1, 0]])
    ranking = np.array([[2, 0, 1, 3], [0, 2, 1, 3], [1, 0, 3, 2]])
    # q0 (x, y): relevant 0, 1, 3 → rel 0111: P@1 0, AP (1/2 + 2/3 + 3/4)/3
    # q1 normal: relevant 2      → rel 0100: P@1 0, AP 1/2
    # q2 (x):    relevant 0, 3   → rel 0110: P@1 0, AP (1/2 + 2/3)/2
    ap0 = (1 / 2 + 2 / 3 + 3 / 4) / 3
    ap1 = 1 / 2
    ap2 = (1 / 2 + 2 / 3) / 2
    scores = retrieval_scores(
        queries, gallery, ranking, task=Task.MULTI_LABEL, codes=["x", "y"], ks=[1]
    )
    assert list(scores.per_class) == ["x", "y", NO_FINDING]
    assert scores.per_class["x"]["queries"] == 2
    assert scores.per_class["y"]["queries"] == 1
    assert scores.per_class[NO_FINDING]["queries"] == 1
    assert scores.per_class["x"]["mAP"] == pytest.approx((ap0 + ap2) / 2)
    assert scores.per_class["y"]["mAP"] == pytest.approx(ap0)
    assert scores.per_class[NO_FINDING]["mAP"] == pytest.approx(ap1)
    assert scores.micro["mAP"] == pytest.approx((ap0 + ap1 + ap2) / 3)
    assert scores.macro["mAP"] == pytest.approx(((ap0 + ap2) / 2 + ap0 + ap1) / 3)


def test_no_finding_code_is_reserved() -> None:
    with pytest.raises(ValueError, match="reserved"):
        retrieval_scores(
            np.zeros((1, 1)),
            np.zeros((2, 1)),
            np.array([[0, 1]]),
            task=Task.MULTI_LABEL,
            codes=[NO_FINDING],
        )


def test_truncated_ranking_is_refused() -> None:
    with pytest.raises(ValueError, match="whole gallery"):
        retrieval_scores(QUERIES, GALLERY, RANKING[:, :2], task=Task.SINGLE_LABEL, codes=["A", "B"])


def test_rank_gallery_orders_by_inner_product_with_ties_by_index() -> None:
    query = np.array([[1.0, 0.0]])
    gallery = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])
    np.testing.assert_array_equal(rank_gallery(query, gallery), [[1, 3, 2, 0]])


def test_rank_gallery_exclude_self_drops_only_the_query() -> None:
    items = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    np.testing.assert_array_equal(
        rank_gallery(items, items, exclude_self=True), [[1, 2], [0, 2], [1, 0]]
    )
    twins = np.array([[1.0, 0.0], [1.0, 0.0]])  # identical items: still only self is dropped
    np.testing.assert_array_equal(rank_gallery(twins, twins, exclude_self=True), [[1], [0]])
    with pytest.raises(ValueError, match="exclude_self"):
        rank_gallery(items[:2], items, exclude_self=True)


def test_exclude_self_counts_only_the_other_items_as_relevant() -> None:
    items = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    targets = np.array([0, 0, 1])
    ranking = rank_gallery(items, items, exclude_self=True)
    scores = retrieval_scores(
        targets, targets, ranking, task=Task.SINGLE_LABEL, codes=["a", "b"], ks=[1]
    )
    # q0: [1, 2] → rel 10; q1: [0, 2] → rel 10; q2: [1, 0] → nothing relevant left.
    assert scores.micro["P@1"] == pytest.approx(2 / 3)
    assert scores.micro["R@1"] == pytest.approx(1.0)
    assert scores.queries_without_relevant == 1


@pytest.mark.parametrize("exclude_self", [False, True])
def test_chunked_ranking_equals_unchunked_and_breaks_ties_by_index(exclude_self: bool) -> None:
    rng = np.random.default_rng(0)
    queries = rng.integers(-2, 3, size=(37, 6)).astype(np.float32)  # small ints: many exact ties
    gallery = queries if exclude_self else rng.integers(-2, 3, size=(53, 6)).astype(np.float32)
    whole = rank_gallery(queries, gallery, exclude_self=exclude_self, chunk=1024)
    chunked = rank_gallery(queries, gallery, exclude_self=exclude_self, chunk=5)
    np.testing.assert_array_equal(whole, chunked)
    sims = queries @ gallery.T
    for q in range(queries.shape[0]):
        expected = [int(g) for g in np.lexsort((np.arange(len(gallery)), -sims[q]))]
        if exclude_self:
            expected.remove(q)
        assert whole[q].tolist() == expected
    sorted_sims = np.concatenate(
        [
            c.similarities
            for c in ranking_chunks(queries, gallery, exclude_self=exclude_self, chunk=4)
        ]
    )
    assert np.all(np.diff(sorted_sims, axis=1) <= 0)
