"""The label-aware ranking (indexer.label_ranking): priors, the choice of λ on held-out
queries, and the candidate search that must give the exact top k of the rank score."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.label_ranking import (
    UNKNOWN,
    CaseDiagnoses,
    LabelRanking,
    LabelRankingError,
    case_classes,
    choose_label_weight,
    distinct_rows,
    label_ranked,
    log_priors,
)
from indexer.vectors.factory import spec_for
from indexer.vectors.index import VectorIndex
from labels import Task

SHA = "0" * 64
CODES = ("a", "b", "c", "d")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_one_label_prior_is_the_probability_of_the_cases_label() -> None:
    classes = case_classes(
        [("b",), ("c",), ("zz",), ("a",)], [True, True, True, False], "abc", Task.SINGLE_LABEL
    )
    assert classes.tolist() == [1, 2, UNKNOWN, UNKNOWN]  # unknown code; unlabelled
    priors = log_priors(np.array([[0.2, 0.7, 0.1]]), classes, Task.SINGLE_LABEL)
    assert np.exp(priors[0]) == pytest.approx([0.7, 0.1, 0.7, 0.7], rel=1e-5)  # unknown: best


def test_multi_label_prior_is_the_chance_of_a_finding_in_common() -> None:
    rows = [("x",), ("x", "y"), (), ("q",)]
    classes = case_classes(rows, [True] * 4, ("x", "y"), Task.MULTI_LABEL)
    priors = np.exp(log_priors(np.array([[0.5, 0.2]]), classes, Task.MULTI_LABEL)[0])
    # x: 0.5; x or y: 1 - 0.5 * 0.8; no finding: 0.5 * 0.8; unknown code: the best of those
    assert priors == pytest.approx([0.5, 0.6, 0.4, 0.6], rel=1e-5)


def test_a_zero_probability_is_floored_not_minus_infinity() -> None:
    priors = log_priors(np.array([[1.0, 0.0]]), np.array([0, 1]), Task.SINGLE_LABEL)
    assert np.isfinite(priors).all()
    assert priors[0, 1] < priors[0, 0]


def _archive(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Look-alike vectors that say little about the class, and the classes."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, classes, n)
    means = rng.normal(size=(classes, 16))
    vectors = unit(rng.normal(size=(n, 16)) * 3 + means[targets] * 0.5)
    return vectors, targets, np.arange(n)  # every case its own group


def test_an_informative_classifier_gets_a_weight_and_finds_more() -> None:
    vectors, targets, groups = _archive(400, 4, seed=0)
    queries = np.arange(0, 400, 2)
    probabilities = np.full((len(queries), 4), 0.1)
    probabilities[np.arange(len(queries)), targets[queries]] = 0.7
    chosen = choose_label_weight(
        vectors, targets, groups, queries, probabilities, targets, Task.SINGLE_LABEL, CODES
    )
    figures = {w: (p10, ap) for w, p10, ap in chosen.figures}
    assert chosen.active
    assert figures[chosen.weight][0] > figures[0.0][0] + 0.2
    assert figures[chosen.weight][1] >= figures[0.0][1]
    assert chosen.queries == len(queries)


def test_a_classifier_that_says_nothing_keeps_the_plain_ranking() -> None:
    vectors, targets, groups = _archive(300, 3, seed=1)
    queries = np.arange(0, 300, 3)
    flat = np.full((len(queries), 3), 1 / 3)
    chosen = choose_label_weight(
        vectors, targets, groups, queries, flat, targets, Task.SINGLE_LABEL, CODES
    )
    assert chosen.weight == 0.0
    assert not chosen.active
    assert len({round(p10, 9) for _, p10, _ in chosen.figures}) == 1  # nothing moved


def test_a_query_never_finds_its_own_group() -> None:
    """Each case has a twin: the same vector and label. Counted as neighbours, the twins
    would put a same-label case first for every query; left out, they must not."""
    vectors, targets, _ = _archive(200, 2, seed=2)
    vectors[1::2], targets[1::2] = vectors[0::2], targets[0::2]
    queries = np.arange(0, 200, 2)
    probabilities = np.full((len(queries), 2), 0.5)

    def plain_p10(groups: np.ndarray) -> float:
        chosen = choose_label_weight(
            vectors, targets, groups, queries, probabilities, targets, Task.SINGLE_LABEL, CODES
        )
        return chosen.figures[0][1]

    apart = plain_p10(np.arange(200) // 2)  # a twin is its case's own group
    counted = plain_p10(np.arange(200))  # every case its own group: the twin is found
    assert counted > apart + 0.03  # the twin adds up to 1/10 to P@10 (0.05 here)
    assert apart < 0.8


def _index(vectors: np.ndarray, ids: np.ndarray) -> VectorIndex:
    return VectorIndex.build(
        vectors, ids, spec_for(len(ids), vectors.shape[1], "Flat"), checkpoint_sha256=SHA
    )


@pytest.mark.parametrize("task", [Task.SINGLE_LABEL, Task.MULTI_LABEL])
@pytest.mark.parametrize("weight", [0.05, 0.5, 3.0])
def test_the_candidate_search_gives_the_exact_top_k_of_the_rank_score(
    task: Task, weight: float
) -> None:
    rng = np.random.default_rng(3)
    n, codes = 600, ("a", "b", "c", "d", "e")
    vectors = unit(rng.normal(size=(n, 12)))
    ids = rng.permutation(10_000)[:n].astype(np.int64)
    if task is Task.SINGLE_LABEL:
        labels = [(codes[int(i)],) for i in rng.integers(0, 5, n)]
    else:
        labels = [tuple(c for c in codes if rng.random() < 0.3) for _ in range(n)]
    labelled = rng.random(n) > 0.1
    rows = sorted(zip(ids.tolist(), labels, labelled.tolist(), strict=True))
    diagnoses = CaseDiagnoses.of(rows, codes, task)
    index = _index(vectors, ids)
    allowed = np.sort(rng.choice(ids, 200, replace=False))
    for q in range(8):
        query = unit(rng.normal(size=12))
        logits = rng.normal(size=5) * 2
        p = (
            np.exp(logits) / np.exp(logits).sum()
            if task is Task.SINGLE_LABEL
            else 1 / (1 + np.exp(-logits))
        )
        for subset in (None, allowed):
            pool = ids if subset is None else subset
            position = {int(i): k for k, i in enumerate(ids)}
            cos = vectors[[position[int(i)] for i in pool]] @ query
            score = cos + weight * log_priors(p[None, :], diagnoses.rows(pool), task)[0]
            expected = pool[np.argsort(-score, kind="stable")[:10]]

            def search(
                k: int, subset: np.ndarray | None = subset, query: np.ndarray = query
            ) -> tuple[np.ndarray, np.ndarray]:
                found = index.search(query[None, :], k, allowed_ids=subset)
                return found[0][0], found[1][0]

            distinct = distinct_rows(diagnoses.rows(pool))
            _, got = label_ranked(search, len(pool), p, diagnoses, weight, 10, distinct)
            assert got.tolist() == expected.tolist(), (q, subset is None)


def test_the_candidate_search_stops_at_the_cases_there_are() -> None:
    vectors = unit(np.random.default_rng(4).normal(size=(7, 8)))
    ids = np.arange(7, dtype=np.int64)
    index = _index(vectors, ids)
    diagnoses = CaseDiagnoses.of(
        [(i, ("a",), True) for i in range(7)], ("a", "b"), Task.SINGLE_LABEL
    )

    def search(k: int) -> tuple[np.ndarray, np.ndarray]:
        found = index.search(vectors[:1], k)
        return found[0][0], found[1][0]

    p = np.array([0.9, 0.1])
    cosines, got = label_ranked(search, 7, p, diagnoses, 0.2, 10, diagnoses.distinct)
    assert sorted(got.tolist()) == list(range(7))
    assert got[0] == 0
    assert cosines[0] == pytest.approx(1.0, abs=1e-5)


def test_a_stored_ranking_reads_back_and_a_bad_one_is_refused() -> None:
    ranking = LabelRanking(
        0.2, 766, ((0.0, 0.6, 0.5), (0.2, 0.69, 0.67)), ("a", "b"), "single_label"
    )
    again = LabelRanking.from_record(ranking.record())
    assert again == ranking
    assert LabelRanking.from_record(None) == LabelRanking(0.0)  # a version from before
    assert "0.2 × log P" in ranking.describe("centred cosine")
    assert LabelRanking(0.0).describe("cosine") == "cosine"
    good = ranking.record()
    for bad in (
        {"weight": -1},
        {"weight": "x"},
        {},
        {"weight": float("nan")},
        {"weight": True},  # JSON true is not a number here
        good | {"queries": float("inf")},  # Python's json reads Infinity
        good | {"figures": [[0.0, float("nan"), 0.5]]},
        good | {"codes": []},  # λ > 0 must say which logits it reads
        good | {"task": "three_label"},
    ):
        with pytest.raises(LabelRankingError):
            LabelRanking.from_record(bad)


def test_the_widening_stops_at_the_best_prior_the_pool_holds() -> None:
    """A filtered pool of one diagnosis: the label term moves nothing, so one search
    must do, however sure the model is of a diagnosis the pool lacks."""
    rng = np.random.default_rng(6)
    vectors = unit(rng.normal(size=(5000, 8)))
    ids = np.arange(5000, dtype=np.int64)
    rows = [(int(i), ("a" if i % 2 else "b",), True) for i in ids]
    diagnoses = CaseDiagnoses.of(rows, ("a", "b"), Task.SINGLE_LABEL)
    index = _index(vectors, ids)
    pool = ids[1::2]  # only "a"
    calls: list[int] = []

    def search(k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(k)
        found = index.search(vectors[:1], k, allowed_ids=pool)
        return found[0][0], found[1][0]

    p = np.array([0.001, 0.999])  # sure of "b", which the pool does not hold
    distinct = distinct_rows(diagnoses.rows(pool))
    _, got = label_ranked(search, len(pool), p, diagnoses, 0.5, 10, distinct)
    assert len(calls) == 1
    assert set(got.tolist()) <= set(pool.tolist())
