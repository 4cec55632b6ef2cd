"""The match-probability table: monotone, in [0, 1], leave-one-group-out, null when too few."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from indexer.calibration import (
    MIN_LABELLED_CASES,
    RAW_COSINE,
    SEARCH_SCORE,
    CalibrationError,
    MatchCalibration,
    fit_match_calibration,
    group_codes,
    label_targets,
    neighbour_pairs,
)
from labels import Task


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def two_classes(n: int, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, list[tuple[str]]]:
    """Cases of labels A and B around two directions, overlapping (``spread``)."""
    rng = np.random.default_rng(seed)
    labels = [("A",) if i % 2 else ("B",) for i in range(n)]
    centres = unit(rng.standard_normal((2, 16)))
    x = centres[[i % 2 for i in range(n)]] + spread * rng.standard_normal((n, 16)) / 4
    return unit(x), labels


def test_the_table_is_monotone_within_0_and_1_and_informative() -> None:
    vectors, labels = two_classes(400)
    table = fit_match_calibration(vectors, labels, [None] * 400, Task.SINGLE_LABEL)
    assert table is not None
    grid = np.linspace(-1, 1, 201)
    p = table.predict(grid)
    assert (np.diff(p) >= 0).all()
    assert p.min() >= 0
    assert p.max() <= 1
    assert table.predict(0.95) > table.base_rate > table.predict(-0.2)
    assert table.labelled_cases == 400
    assert table.queries == 400
    assert table.pairs == 400 * table.neighbours
    assert table.rule == "the same label"
    assert MatchCalibration.from_record(table.record()) == table  # what scores.json holds


def test_the_table_reads_back_as_isotonic_regression_predicts() -> None:
    vectors, labels = two_classes(200, seed=3)
    table = fit_match_calibration(vectors, labels, [None] * 200, Task.SINGLE_LABEL)
    assert table is not None
    targets = label_targets(labels, Task.SINGLE_LABEL)
    xs, ys = neighbour_pairs(
        vectors, targets, group_codes([None] * 200), np.arange(200), Task.SINGLE_LABEL, 100
    )
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip")
    iso.fit(xs.astype(np.float64), ys.astype(np.float64))
    grid = np.linspace(-1, 1, 301)
    np.testing.assert_allclose(table.predict(grid), iso.predict(grid), atol=1e-9)


def test_a_case_s_own_group_is_left_out() -> None:
    """Two photographs of each lesion (the same vector, the same label): without the group
    rule the table would learn that a score of 1 means 'same diagnosis'."""
    rng = np.random.default_rng(1)
    vectors = np.repeat(unit(rng.standard_normal((60, 16))), 2, axis=0)  # no structure
    labels = [("A",) if rng.random() < 0.5 else ("B",) for _ in range(60) for _ in range(2)]
    labels = [labels[2 * (i // 2)] for i in range(120)]  # a lesion's photographs agree
    lesions = [f"lesion-{i // 2}" for i in range(120)]
    grouped = fit_match_calibration(vectors, labels, lesions, Task.SINGLE_LABEL)
    ungrouped = fit_match_calibration(vectors, labels, [None] * 120, Task.SINGLE_LABEL)
    assert grouped is not None
    assert ungrouped is not None
    assert max(grouped.scores) < 0.9  # no pair of a lesion with itself
    assert ungrouped.predict(1.0) == pytest.approx(1.0)
    assert grouped.predict(1.0) < 0.8


def test_multi_label_pairs_share_a_finding_or_both_have_none() -> None:
    rng = np.random.default_rng(2)
    normal, abnormal = unit(rng.standard_normal(16)), unit(rng.standard_normal(16))
    n = 80
    vectors = unit(
        np.stack([normal if i % 2 else abnormal for i in range(n)])
        + rng.standard_normal((n, 16)) * 0.05
    )
    # normal cases: no finding; abnormal ones: B, with A on some (all share B)
    labels = [() if i % 2 else (("A", "B") if i % 4 == 0 else ("B",)) for i in range(n)]
    table = fit_match_calibration(vectors, labels, [None] * n, Task.MULTI_LABEL, neighbours=10)
    assert table is not None
    assert table.rule.startswith("at least one finding in common")
    assert table.base_rate == pytest.approx(1.0)  # every close neighbour is a match
    far = fit_match_calibration(vectors, labels, [None] * n, Task.MULTI_LABEL, neighbours=79)
    assert far is not None
    assert far.predict(0.99) > 0.9
    assert far.predict(float(normal @ abnormal)) < 0.1


def test_too_few_labelled_cases_or_none_give_no_table() -> None:
    vectors, labels = two_classes(MIN_LABELLED_CASES - 1)
    groups = [None] * len(labels)
    assert fit_match_calibration(vectors, labels, groups, Task.SINGLE_LABEL) is None
    vectors, labels = two_classes(200)
    groups = [None] * 200
    unlabelled = [False] * 200
    assert (
        fit_match_calibration(vectors, labels, groups, Task.SINGLE_LABEL, labelled=unlabelled)
        is None
    )
    few = [i < MIN_LABELLED_CASES - 1 for i in range(200)]
    assert fit_match_calibration(vectors, labels, groups, Task.SINGLE_LABEL, labelled=few) is None
    everyone_one_group = ["P"] * 200  # nothing is left once a case's group is excluded
    assert fit_match_calibration(vectors, labels, everyone_one_group, Task.SINGLE_LABEL) is None


def test_the_query_sample_is_fixed() -> None:
    vectors, labels = two_classes(300)
    first = fit_match_calibration(vectors, labels, [None] * 300, Task.SINGLE_LABEL, queries=50)
    again = fit_match_calibration(vectors, labels, [None] * 300, Task.SINGLE_LABEL, queries=50)
    assert first == again
    assert first is not None
    assert first.queries == 50


@pytest.mark.parametrize(
    "change",
    [
        {"probabilities": [0.9, 0.2]},  # decreasing
        {"probabilities": [0.2, 1.5]},  # above 1
        {"scores": [0.5, 0.1]},  # scores out of order
        {"scores": [0.1]},  # lengths differ
        {"scores": [0.1, float("nan")]},
        {"rule": None, "labelled_cases": "many"},
    ],
)
def test_a_stored_table_that_cannot_be_one_is_refused(change: dict[str, object]) -> None:
    good = {
        "scores": [0.1, 0.5], "probabilities": [0.2, 0.9], "rule": "the same label",
        "labelled_cases": 60, "queries": 60, "pairs": 600, "base_rate": 0.4,
        "neighbours": 10, "seed": 0,
    }  # fmt: skip
    MatchCalibration.from_record(good)
    with pytest.raises(CalibrationError, match="not a calibration table"):
        MatchCalibration.from_record(good | change)
    with pytest.raises(CalibrationError, match="not a calibration table"):
        MatchCalibration.from_record({"scores": [0.1]})


def test_queries_come_from_the_held_out_cases_when_there_are_enough() -> None:
    vectors, labels = two_classes(300)
    groups = [None] * 300
    held_out = [i >= 200 for i in range(300)]  # 100 cases outside the training split
    table = fit_match_calibration(vectors, labels, groups, Task.SINGLE_LABEL, held_out=held_out)
    assert table is not None
    assert (table.queries, table.queries_from) == (100, "held-out cases")
    assert table.labelled_cases == 300  # their neighbours are all the labelled cases
    few = [i >= 290 for i in range(300)]
    table = fit_match_calibration(vectors, labels, groups, Task.SINGLE_LABEL, held_out=few)
    assert table is not None
    assert (table.queries, table.queries_from) == (300, "all labelled cases")


def test_with_raw_vectors_the_table_reads_their_cosine_at_the_neighbours_searched() -> None:
    """Neighbours ranked in the search space (here: a distorted copy), x their raw cosine."""
    raw, labels = two_classes(200, seed=4)
    rng = np.random.default_rng(5)
    search = unit(raw + rng.standard_normal(raw.shape).astype(np.float32) / 2)
    table = fit_match_calibration(search, labels, [None] * 200, Task.SINGLE_LABEL, raw=raw)
    assert table is not None
    assert table.reads == RAW_COSINE
    assert table.record()["reads"] == "raw cosine"
    assert MatchCalibration.from_record(table.record()) == table
    targets = label_targets(labels, Task.SINGLE_LABEL)
    groups = group_codes([None] * 200)
    queries = np.arange(200)
    xs, ys = neighbour_pairs(search, targets, groups, queries, Task.SINGLE_LABEL, 100, raw)
    # by hand: each query's top 100 others by the search cosine, read at the raw cosine
    sims = search @ search.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :100]
    by_hand = np.take_along_axis(raw @ raw.T, top, axis=1)
    np.testing.assert_allclose(np.sort(xs), np.sort(by_hand.ravel()), atol=1e-5)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip")
    iso.fit(xs.astype(np.float64), ys.astype(np.float64))
    grid = np.linspace(-1, 1, 301)
    np.testing.assert_allclose(table.predict(grid), iso.predict(grid), atol=1e-9)
    on_search = fit_match_calibration(search, labels, [None] * 200, Task.SINGLE_LABEL)
    assert on_search is not None
    assert on_search.reads == SEARCH_SCORE
    assert on_search.scores != table.scores
    same_space = fit_match_calibration(raw, labels, [None] * 200, Task.SINGLE_LABEL, raw=raw)
    plain = fit_match_calibration(raw, labels, [None] * 200, Task.SINGLE_LABEL)
    assert same_space is not None
    assert plain is not None  # not centred: the raw cosine is the search score
    assert (same_space.scores, same_space.probabilities) == (plain.scores, plain.probabilities)
    with pytest.raises(ValueError, match="raw vectors"):
        fit_match_calibration(search, labels, [None] * 200, Task.SINGLE_LABEL, raw=raw[:10])


def test_a_table_stored_without_reads_reads_the_search_score() -> None:
    old = {
        "scores": [0.1, 0.5], "probabilities": [0.2, 0.9], "rule": "the same label",
        "labelled_cases": 60, "queries": 60, "pairs": 600, "base_rate": 0.4,
        "neighbours": 10, "seed": 0,
    }  # fmt: skip
    assert MatchCalibration.from_record(old).reads == SEARCH_SCORE
    assert MatchCalibration.from_record(old | {"reads": "raw cosine"}).reads == RAW_COSINE
    with pytest.raises(CalibrationError, match="it reads 'centred logit'"):
        MatchCalibration.from_record(old | {"reads": "centred logit"})
