"""The match probability: P(a case shares the query's diagnosis | the pair's raw cosine).

Fitted at every index build on the version's own labelled cases
(:func:`fit_match_calibration`), stored with the version (``scores.json``, hash-checked
like ``index.faiss``) and served beside each case's cosine.

How it is fitted
----------------
* A fixed random sample (seed 0) of up to :data:`CALIBRATION_QUERIES` labelled cases acts
  as queries against all the labelled cases of the version, in the space the version
  searches (centred when it is centred). The queries are drawn from the *held-out* cases
  (those outside the archive's training split, which the model has not been trained on)
  when there are at least :data:`MIN_LABELLED_CASES` of them: a network agrees with its
  own training labels more often than with a new image's, so a table fitted on training
  cases promises too much (HAM10000, raw cosine: fitted on the training split it gave
  the test split's top-10 pairs a mean of 0.92 where 0.83 shared the label; fitted on
  the validation cases, 0.90).
  Without enough held-out cases it is fitted on all labelled cases, and says so
  (``queries_from``).
* Leave-one-group-out: a query's own case and every case with the same group key (the
  same patient or lesion, :mod:`indexer.group_keys`) are left out of its neighbours, so
  a near-duplicate photograph of the same lesion does not teach the table that 0.99
  means "same diagnosis".
* Each query's top :data:`CALIBRATION_NEIGHBOURS` remaining neighbours in the space the
  version searches (where the service's answers lie) give (x, same?) pairs. *x* is the
  **raw cosine** of the pair, that of the model's own unit embeddings before centring
  (``reads``: :data:`RAW_COSINE`): the neighbours are those the service shows, ranked by
  the centred cosine, but their probability reads the raw one. On HAM10000 a table
  fitted on centred cosines was no better than the constant share (test top-10 pairs:
  Brier 0.162 against 0.156; all-pairs AUC 0.683), one fitted on raw cosines was
  informative (0.124 against 0.144; AUC 0.894): the component along the mean that
  centring removes is the one that tells diagnoses apart over the whole gallery
  (docs/benchmarks.md, "Scores"). So a probability need not fall with the rank: a case
  ranked lower by the centred cosine can have the higher raw one. A table written before
  ``reads`` existed read the search score (:data:`SEARCH_SCORE`), and is read so still.
  *Same*: one-label task, the same label; multi-label task, at least one finding in
  common, or both without any finding (:func:`metrics.retrieval.relevance_matrix`, the
  training losses' positive pairs).
* Isotonic regression (scikit-learn, increasing, clipped to [0, 1]) of same? on x; its
  breakpoints are the stored table, read back by linear interpolation (exactly
  ``IsotonicRegression.predict`` with ``out_of_bounds="clip"``).

Fewer than :data:`MIN_LABELLED_CASES` labelled cases (or no pair left after the
exclusions): no table, and the service answers null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression

from labels import Task
from metrics.retrieval import relevance_matrix

MIN_LABELLED_CASES = 50
CALIBRATION_QUERIES = 2000
CALIBRATION_NEIGHBOURS = 100  # the service returns at most 100 cases
CALIBRATION_SEED = 0
QUERY_CHUNK = 256
QUERIES_FROM = {True: "held-out cases", False: "all labelled cases"}
RAW_COSINE = "raw cosine"  # the model's own unit embeddings, before centring
SEARCH_SCORE = "search score"  # the cosine the version ranks by (centred when it is)
READS = (RAW_COSINE, SEARCH_SCORE)
RULES = {
    Task.SINGLE_LABEL: "the same label",
    Task.MULTI_LABEL: "at least one finding in common, or both without a finding",
}


class CalibrationError(ValueError):
    """A stored calibration table that cannot be what :func:`fit_match_calibration` wrote."""


@dataclass(frozen=True)
class MatchCalibration:
    """A monotone table cosine → P(same diagnosis), with how it was fitted and which
    cosine it reads (``reads``, module docstring)."""

    scores: tuple[float, ...]  # non-decreasing breakpoints (cosines of the kind ``reads``)
    probabilities: tuple[float, ...]  # non-decreasing, in [0, 1]
    rule: str  # what "same diagnosis" meant
    labelled_cases: int  # the cases the pairs were drawn from
    queries: int
    pairs: int
    base_rate: float  # the share of same-diagnosis pairs among them
    neighbours: int
    seed: int
    queries_from: str = "held-out cases"  # or "all labelled cases" (module docstring)
    reads: str = SEARCH_SCORE  # RAW_COSINE or SEARCH_SCORE (a table stored without the key)

    def predict(self, scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(same diagnosis) for each cosine of the kind the table ``reads`` (clipped at
        the table's ends)."""
        return np.interp(np.asarray(scores, dtype=np.float64), self.scores, self.probabilities)

    def record(self) -> dict[str, Any]:
        """The table as ``scores.json`` stores it."""
        return {
            "scores": list(self.scores),
            "probabilities": list(self.probabilities),
            "rule": self.rule,
            "labelled_cases": self.labelled_cases,
            "queries": self.queries,
            "pairs": self.pairs,
            "base_rate": self.base_rate,
            "neighbours": self.neighbours,
            "seed": self.seed,
            "queries_from": self.queries_from,
            "reads": self.reads,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MatchCalibration:
        """A stored table, checked (:class:`CalibrationError` when it cannot be one)."""
        try:
            scores = tuple(float(s) for s in record["scores"])
            probabilities = tuple(float(p) for p in record["probabilities"])
            table = cls(
                scores=scores,
                probabilities=probabilities,
                rule=str(record["rule"]),
                labelled_cases=int(record["labelled_cases"]),
                queries=int(record["queries"]),
                pairs=int(record["pairs"]),
                base_rate=float(record["base_rate"]),
                neighbours=int(record["neighbours"]),
                seed=int(record["seed"]),
                queries_from=str(record.get("queries_from", QUERIES_FROM[True])),
                reads=str(record.get("reads", SEARCH_SCORE)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"not a calibration table: {exc}") from None
        if table.reads not in READS:
            raise CalibrationError(
                f"not a calibration table: it reads {table.reads!r}, not one of {READS}"
            )
        xs, ps = np.asarray(scores), np.asarray(probabilities)
        if (
            not len(xs)
            or len(xs) != len(ps)
            or not (np.isfinite(xs).all() and np.isfinite(ps).all())
            or (np.diff(xs) < 0).any()
            or (np.diff(ps) < 0).any()
            or ps.min() < 0
            or ps.max() > 1
        ):
            raise CalibrationError(
                "not a calibration table: the scores and the probabilities must "
                "be non-decreasing, the probabilities in [0, 1], as many of each"
            )
        return table


def label_targets(labels: Sequence[Sequence[str]], task: Task) -> np.ndarray:
    """Labels as :func:`metrics.retrieval.relevance_matrix` takes them: class ids (one
    label per case; a case without one is its own class ``""``) or multi-hot rows."""
    codes = sorted({code for row in labels for code in row})
    position = {code: i for i, code in enumerate(codes)}
    if task is Task.SINGLE_LABEL:
        return np.asarray(
            [position[row[0]] if row else len(codes) for row in labels], dtype=np.intp
        )
    hot = np.zeros((len(labels), len(codes)), dtype=bool)
    for i, row in enumerate(labels):
        hot[i, [position[code] for code in row]] = True
    return hot


def group_codes(groups: Sequence[str | None]) -> np.ndarray:
    """One integer per case: equal for cases of one group, unique for a case without one."""
    known: dict[str, int] = {}
    codes = np.empty(len(groups), dtype=np.int64)
    for i, group in enumerate(groups):
        codes[i] = known.setdefault(group, len(known)) if group else -1 - i
    return codes


def neighbour_pairs(
    vectors: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    queries: np.ndarray,
    task: Task,
    neighbours: int,
    raw: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(x, same?) of each query's top ``neighbours`` cases outside its own group, ranked by
    the cosine of ``vectors``; x is that cosine, or with ``raw`` (the same cases' raw unit
    embeddings) the pair's raw cosine."""
    scores, same = [], []
    for start in range(0, len(queries), QUERY_CHUNK):
        chunk = queries[start : start + QUERY_CHUNK]
        sims = vectors[chunk] @ vectors.T  # (c, n)
        sims[groups[chunk][:, None] == groups[None, :]] = -np.inf  # itself and its group
        k = min(neighbours, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (c, k)
        top_scores = np.take_along_axis(sims, top, axis=1)
        kept = np.isfinite(top_scores)
        if raw is not None:
            top_scores = (raw[top] @ raw[chunk][:, :, None])[:, :, 0]  # (c, k) raw cosines
        relevant = relevance_matrix(targets[chunk], targets, task)
        top_same = np.take_along_axis(relevant, top, axis=1)
        scores.append(top_scores[kept])
        same.append(top_same[kept])
    return np.concatenate(scores), np.concatenate(same)


def calibration_queries(
    labelled: np.ndarray, held_out: np.ndarray, queries: int, seed: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(the labelled cases' positions, the query sample as positions among them, whether
    it is drawn from held-out cases): empty when fewer than :data:`MIN_LABELLED_CASES`
    cases are labelled (module docstring; :mod:`indexer.label_ranking` uses the same)."""
    chosen = np.flatnonzero(labelled)
    if len(chosen) < MIN_LABELLED_CASES:
        return chosen[:0], chosen[:0], False
    candidates = np.flatnonzero(held_out[chosen])  # positions among the labelled cases
    from_held_out = len(candidates) >= MIN_LABELLED_CASES
    if not from_held_out:
        candidates = np.arange(len(chosen))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(candidates, size=min(queries, len(candidates)), replace=False))
    return chosen, sample, from_held_out


def fit_match_calibration(
    vectors: npt.ArrayLike,
    labels: Sequence[Sequence[str]],
    groups: Sequence[str | None],
    task: Task,
    *,
    labelled: Sequence[bool] | None = None,
    held_out: Sequence[bool] | None = None,
    queries: int = CALIBRATION_QUERIES,
    neighbours: int = CALIBRATION_NEIGHBOURS,
    seed: int = CALIBRATION_SEED,
    raw: npt.ArrayLike | None = None,
) -> MatchCalibration | None:
    """The match-probability table of cases whose unit ``vectors`` (n, dim) are those the
    version searches (module docstring); None with too few labelled cases. ``held_out``:
    the cases the model was not trained on (default: none known). ``raw``: the same cases'
    raw unit embeddings (``vectors`` itself for a version that is not centred); the table
    then reads the raw cosine (:data:`RAW_COSINE`), else the search score."""
    arr = np.asarray(vectors, dtype=np.float32)
    read = None if raw is None else np.asarray(raw, dtype=np.float32)
    if read is not None and read.shape != arr.shape:
        raise ValueError(f"{read.shape} raw vectors for {arr.shape} search vectors")
    every = np.ones(len(arr), dtype=bool)
    mask = every if labelled is None else np.asarray(labelled, bool)
    unseen = ~every if held_out is None else np.asarray(held_out, bool)
    if not (len(arr) == len(labels) == len(groups) == len(mask) == len(unseen)):
        raise ValueError(
            f"{len(arr)} vectors, {len(labels)} label rows, {len(groups)} groups, "
            f"{len(mask)} labelled and {len(unseen)} held-out flags: one of each per case"
        )
    chosen, sample, from_held_out = calibration_queries(mask, unseen, queries, seed)
    if not len(chosen):
        return None
    kept_vectors = np.ascontiguousarray(arr[chosen])
    kept_raw = None if read is None or read is arr else np.ascontiguousarray(read[chosen])
    targets = label_targets([labels[int(i)] for i in chosen], task)
    codes = group_codes([groups[int(i)] for i in chosen])
    xs, ys = neighbour_pairs(kept_vectors, targets, codes, sample, task, neighbours, kept_raw)
    if not len(xs):
        return None
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    iso.fit(xs.astype(np.float64), ys.astype(np.float64))
    return MatchCalibration(
        scores=tuple(float(x) for x in iso.X_thresholds_),
        probabilities=tuple(float(np.clip(y, 0.0, 1.0)) for y in iso.y_thresholds_),
        rule=RULES[task],
        labelled_cases=len(chosen),
        queries=len(sample),
        pairs=len(xs),
        base_rate=float(ys.mean()),
        neighbours=neighbours,
        seed=seed,
        queries_from=QUERIES_FROM[from_held_out],
        reads=SEARCH_SCORE if read is None else RAW_COSINE,
    )
