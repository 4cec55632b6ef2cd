"""Label-aware ranking: the cosine plus λ × log P(the query has the case's diagnosis).

The embedding alone ranks a case by how alike the two images look. The model also says
how likely each diagnosis is for the query (its class probabilities), and every labelled
case of the archive has a confirmed one. A version may therefore rank its cases by

    rank score = cosine (the version's search space) + λ · log prior,

where *prior* is the query's probability of sharing the case's diagnosis: one-label
task, the query's probability of the case's label; multi-label task, the chance of at
least one finding in common, ``1 − Π (1 − p_j)`` over the case's findings (the
per-finding probabilities taken as independent), or for a case without any finding the
chance that the query has none either, ``Π (1 − p_j)`` (the rule of
:func:`metrics.retrieval.relevance_matrix`). An unlabelled case, or one whose label the
model does not know, gets the highest prior any case could have for the query
(:func:`best_priors`): it is ranked as if it might have the most likely diagnosis, never
pushed below a labelled case that does.

λ = 0 is the plain cosine ranking. λ is chosen when a full version is written, on the same
held-out queries as the match-probability table (:mod:`indexer.calibration`: up to 2,000
cases outside the training split against all labelled cases, a query's own patient or
lesion left out): for each λ of :data:`LABEL_WEIGHTS` the macro P@10 and the macro
average precision of the top 100 (over the query's classes, or findings) are computed.
A λ qualifies when its macro P@10 is higher than the plain ranking's, its average
precision is not lower, and the queries' own P@10 gains are more than noise (the macro
mean gain above two of its standard errors, a paired test: on a small archive whose
labels the classifier does not know, chance alone would otherwise pick a λ). The
qualifying λ with the highest macro P@10 is kept; λ = 0 when none qualifies. A version
that adds or removes cases keeps its base version's λ (as it keeps its centre). So the
ranking moves towards the classifier only where, on this archive's held-out cases, that
finds more cases of the query's diagnosis — and a model whose classifier is poor keeps
λ = 0.

The case's ``score`` stays the cosine and its ``match_probability`` reads the raw
cosine: the rank score orders the cases and is not shown as a similarity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labels import Task
from metrics.retrieval import relevance_matrix

LABEL_WEIGHTS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SELECTION_DEPTH = 100  # average precision over each query's top 100
SELECTION_K = 10  # the viewer shows ten cases
PRIOR_FLOOR = 1e-6  # log(0) would put a case below every other for good
QUERY_CHUNK = 256
UNKNOWN = -1  # a case without a label the model knows (one-label task)


class LabelRankingError(ValueError):
    """A stored label-ranking record that cannot be what :func:`choose_label_weight` wrote."""


@dataclass(frozen=True)
class LabelRanking:
    """The λ of a version and the held-out figures it was chosen on."""

    weight: float  # λ; 0: the plain cosine ranking
    queries: int = 0
    figures: tuple[tuple[float, float, float], ...] = ()  # (λ, macro P@10, macro AP@100)
    codes: tuple[str, ...] = ()  # the checkpoint's label codes, in the order of its logits
    task: str = ""  # the checkpoint's task (labels.Task value); "" when λ is 0

    @property
    def active(self) -> bool:
        return self.weight > 0

    def describe(self, space: str) -> str:
        """What orders the cases, for the answer (``space``: the cosine's name)."""
        if not self.active:
            return space
        return f"{space} + {self.weight:g} × log P(the query has the case's diagnosis)"

    def record(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "queries": self.queries,
            "figures": [list(row) for row in self.figures],
            "codes": list(self.codes),
            "task": self.task,
            "chosen_by": "the highest held-out macro P@10 above the plain ranking's, with "
            "a macro AP@100 not below it and a macro P@10 gain above two standard errors "
            "(paired over the queries)",
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> LabelRanking:
        """A stored record (None, or a version written before label ranking: λ = 0)."""
        if record is None:
            return cls(0.0)
        try:
            raw = record["weight"]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise TypeError(f"weight {raw!r} is not a number")
            weight = float(raw)
            figures = tuple((float(w), float(p), float(a)) for w, p, a in record.get("figures", []))
            codes = tuple(str(code) for code in record.get("codes", []))
            task = str(record.get("task", ""))
            found = cls(weight, int(record.get("queries", 0)), figures, codes, task)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise LabelRankingError(f"not a label-ranking record: {exc}") from None
        if not np.isfinite(weight) or weight < 0 or not all(np.isfinite(found.figures).flat):
            raise LabelRankingError(f"not a label-ranking record: weight {weight}")
        if found.active and (not codes or task not in {t.value for t in Task}):
            raise LabelRankingError(
                "not a label-ranking record: λ > 0 needs the label codes and the task"
            )
        return found


def case_classes(
    labels: Sequence[Sequence[str]], labelled: Sequence[bool], codes: Sequence[str], task: Task
) -> np.ndarray:
    """Each case's diagnosis in the model's label order: one-label, a class index
    (:data:`UNKNOWN` for an unlabelled case or a label the model does not know);
    multi-label, an (n, C + 1) bool array whose last column marks an unknown case."""
    position = {code: i for i, code in enumerate(codes)}
    if task is Task.SINGLE_LABEL:
        found = np.full(len(labels), UNKNOWN, dtype=np.int64)
        for i, (row, known) in enumerate(zip(labels, labelled, strict=True)):
            if known and row and row[0] in position:
                found[i] = position[row[0]]
        return found
    hot = np.zeros((len(labels), len(codes) + 1), dtype=bool)
    for i, (row, known) in enumerate(zip(labels, labelled, strict=True)):
        if not known or any(code not in position for code in row):
            hot[i, -1] = True
        else:
            hot[i, [position[code] for code in row]] = True
    return hot


def log_priors(
    probabilities: npt.ArrayLike, classes: np.ndarray, task: Task
) -> npt.NDArray[np.float32]:
    """(Q, n) log P(query q has case i's diagnosis) for the queries' class probabilities
    (Q, C) and the cases' :func:`case_classes` (module docstring)."""
    p = np.clip(np.atleast_2d(np.asarray(probabilities, dtype=np.float64)), 0.0, 1.0)
    best = np.log(np.clip(best_priors(p, task), PRIOR_FLOOR, 1.0)).astype(np.float32)
    if task is Task.SINGLE_LABEL:  # one (Q, C + 1) table, then one gather: (Q, n) float32
        table = np.concatenate([np.log(np.clip(p, PRIOR_FLOOR, 1.0)), np.zeros((len(p), 1))], 1)
        table = table.astype(np.float32)
        table[:, -1] = best  # UNKNOWN (−1) reads the last column
        return table[:, classes]
    findings = classes[:, :-1].astype(np.float32)  # (n, C)
    log_absent = np.log(np.clip(1.0 - p, PRIOR_FLOOR, 1.0)).astype(np.float32)  # (Q, C)
    none_shared = np.exp(log_absent @ findings.T)  # Π over the case's findings of (1 − p)
    has_finding = findings.sum(axis=1) > 0
    no_finding = log_absent.sum(axis=1, keepdims=True)  # log Π (1 − p_j), (Q, 1)
    prior = np.log(np.clip(1.0 - none_shared, PRIOR_FLOOR, 1.0))
    prior = np.where(has_finding[None, :], prior, np.maximum(no_finding, np.log(PRIOR_FLOOR)))
    return np.where(classes[None, :, -1], best[:, None], prior).astype(np.float32)


def best_priors(probabilities: np.ndarray, task: Task) -> np.ndarray:
    """(Q,) the highest prior any case can have for each query: one-label, its top class
    probability; multi-label, the larger of "a finding in common" with a case that has
    every finding, ``1 − Π (1 − p_j)``, and "no finding either", ``Π (1 − p_j)``."""
    p = np.clip(np.atleast_2d(np.asarray(probabilities, dtype=np.float64)), 0.0, 1.0)
    if task is Task.SINGLE_LABEL:
        return p.max(axis=1)
    none = np.exp(np.log(np.clip(1.0 - p, PRIOR_FLOOR, 1.0)).sum(axis=1))
    return np.maximum(1.0 - none, none)


def _groups(targets: np.ndarray, task: Task) -> list[np.ndarray]:
    """The queries of each class (one-label), or of each finding and of "no finding"
    (multi-label): what a macro figure averages over."""
    if task is Task.SINGLE_LABEL:
        groups = [targets == c for c in np.unique(targets)]
    else:
        groups = [targets[:, j] for j in range(targets.shape[1]) if targets[:, j].any()]
        groups.append(~targets.any(axis=1))
    return [g for g in groups if g.any()]


def _macro(values: np.ndarray, groups: list[np.ndarray]) -> float:
    """The mean over the groups of the mean of ``values`` over each group's queries."""
    return float(np.mean([values[g].mean() for g in groups])) if groups else 0.0


def _clearly_more(gains: np.ndarray, groups: list[np.ndarray]) -> bool:
    """Whether the queries' P@10 gains raise the macro P@10 by more than noise: the macro
    mean gain above two of its standard errors (a paired test over the same queries, each
    group's variance over its own size; a group of one query borrows the variance of
    all the queries)."""
    if len(gains) < 2 or not groups:
        return False
    overall = float(gains.var(ddof=1))
    variance = sum(
        (float(gains[g].var(ddof=1)) if g.sum() > 1 else overall) / g.sum() for g in groups
    )
    error = float(np.sqrt(variance)) / len(groups)
    return _macro(gains, groups) > 2 * error


def choose_label_weight(
    vectors: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    queries: np.ndarray,
    probabilities: np.ndarray,
    classes: np.ndarray,
    task: Task,
    codes: Sequence[str],
    weights: Sequence[float] = LABEL_WEIGHTS,
) -> LabelRanking:
    """λ for cases with unit ``vectors`` (the search space), ``targets``
    (:func:`indexer.calibration.label_targets`) and ``classes`` (:func:`case_classes`),
    from the cases at positions ``queries`` whose class probabilities are
    ``probabilities`` (len(queries), C), in the order of ``codes``. A case of the query's
    own group (``groups``) is never its neighbour."""
    weights = sorted({0.0, *weights})
    depth = min(SELECTION_DEPTH, len(vectors) - 1)
    if depth < SELECTION_K or not len(queries):
        return LabelRanking(0.0, codes=tuple(codes), task=task.value)
    hits = {w: np.zeros(len(queries)) for w in weights}
    precisions = {w: np.zeros(len(queries)) for w in weights}
    step = max(8, min(QUERY_CHUNK, 2**23 // max(len(vectors), 1)))  # ≈ 32 MB per (chunk, n)
    for start in range(0, len(queries), step):
        chunk = queries[start : start + step]
        sims = vectors[chunk] @ vectors.T
        own = groups[chunk][:, None] == groups[None, :]
        relevant = relevance_matrix(targets[chunk], targets, task) & ~own
        total = np.minimum(relevant.sum(axis=1), depth)
        priors = log_priors(probabilities[start : start + len(chunk)], classes, task)
        for w in weights:
            scores = sims + w * priors
            scores[own] = -np.inf
            top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
            found = np.take_along_axis(relevant, np.take_along_axis(top, order, axis=1), axis=1)
            ranks = np.arange(1, depth + 1)
            average = (np.cumsum(found, axis=1) / ranks * found).sum(axis=1)
            precisions[w][start : start + len(chunk)] = average / np.maximum(total, 1)
            hits[w][start : start + len(chunk)] = found[:, :SELECTION_K].mean(axis=1)
    groups_of = _groups(targets[queries], task)
    figures = tuple(
        (float(w), _macro(hits[w], groups_of), _macro(precisions[w], groups_of)) for w in weights
    )
    plain = next(row for row in figures if row[0] == 0.0)
    better = [
        row
        for row in figures
        if row[1] > plain[1]
        and row[2] >= plain[2]
        and _clearly_more(hits[row[0]] - hits[0.0], groups_of)
    ]
    best = max(better, key=lambda row: (row[1], -row[0]), default=plain)
    return LabelRanking(best[0], len(queries), figures, tuple(codes), task.value)


@dataclass(frozen=True)
class CaseDiagnoses:
    """Every case's :func:`case_classes` row, by case id (what a search looks up)."""

    ids: np.ndarray  # sorted case ids
    classes: np.ndarray  # their rows, in the same order
    task: Task
    distinct: np.ndarray  # the different rows among them (distinct_rows)

    @classmethod
    def of(
        cls, rows: Sequence[tuple[int, tuple[str, ...], bool]], codes: Sequence[str], task: Task
    ) -> CaseDiagnoses:
        """From ``(case id, labels, labelled)`` rows sorted by id (the store's)."""
        ids = np.asarray([row[0] for row in rows], dtype=np.int64)
        classes = case_classes([r[1] for r in rows], [r[2] for r in rows], codes, task)
        return cls(ids, classes, task, distinct_rows(classes))

    def rows(self, case_ids: np.ndarray) -> np.ndarray:
        """The rows of ``case_ids``; a case not known here counts as unlabelled."""
        at = np.clip(np.searchsorted(self.ids, case_ids), 0, max(len(self.ids) - 1, 0))
        known = (self.ids[at] == case_ids) if len(self.ids) else np.zeros(len(case_ids), bool)
        if self.task is Task.SINGLE_LABEL:
            found = self.classes[at] if len(self.ids) else np.full(len(case_ids), UNKNOWN)
            return np.where(known, found, UNKNOWN)
        width = self.classes.shape[1]
        found = self.classes[at] if len(self.ids) else np.zeros((len(case_ids), width), bool)
        found = found & known[:, None]
        found[~known, -1] = True
        return found


SearchFn = Callable[[int], tuple[np.ndarray, np.ndarray]]  # k → (cosines, ids), best first
WIDEST = 4096  # candidates beyond this: the whole pool at once


def distinct_rows(rows: np.ndarray) -> np.ndarray:
    """The different diagnoses among ``rows`` (:meth:`CaseDiagnoses.rows`): what bounds
    the prior a case of that pool can have."""
    return np.unique(rows) if rows.ndim == 1 else np.unique(rows, axis=0)


def label_ranked(
    search: SearchFn,
    total: int,
    probabilities: np.ndarray,
    diagnoses: CaseDiagnoses,
    weight: float,
    top_k: int,
    distinct: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``top_k`` (cosines, ids) of one query by rank score, best first.

    ``search(k)`` gives the query's top k by cosine among the ``total`` cases it may
    return, whose diagnoses are among ``distinct`` (:func:`distinct_rows`). The candidates
    grow (×4, from 4 × ``top_k``, at least 64; past :data:`WIDEST`, to the whole pool)
    until the k-th rank score is at least the best any case outside them could reach (the
    last candidate's cosine plus λ times the best log prior among ``distinct``), so the
    answer is the exact top k of the rank score over what ``search`` returns (exact for a
    Flat index; as approximate as the cosine search itself for HNSW or IVF).
    """
    found = log_priors(probabilities[None, :], distinct, diagnoses.task) if len(distinct) else None
    bound = 0.0 if found is None else float(found.max())  # no diagnosis known: the log of 1
    wanted = min(max(4 * top_k, 64), max(total, 1))
    while True:
        cosines, ids = search(wanted)
        kept = ids >= 0
        cosines, ids = cosines[kept], ids[kept]
        priors = log_priors(probabilities[None, :], diagnoses.rows(ids), diagnoses.task)[0]
        scores = cosines + weight * priors
        order = np.argsort(-scores, kind="stable")[:top_k]
        complete = len(ids) < wanted or wanted >= total
        if complete or scores[order[-1]] >= cosines[-1] + weight * bound:
            return cosines[order], ids[order]
        wanted = total if wanted * 4 > WIDEST else min(wanted * 4, total)
