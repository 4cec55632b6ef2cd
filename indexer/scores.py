"""What a version's scores mean: the centre it searches around and its match-probability table.

A full build centres the version on the mean of its own unit embeddings (unless the
indexer is told ``--no-centre``); an ``add`` or ``remove`` version keeps its base version's
centre, so old and new vectors share one space. Every version written gets the
match-probability table of its own labelled cases (:mod:`indexer.calibration`): the
neighbours are chosen in the space it searches, their probability reads the raw cosine
(``reads: "raw cosine"``). Both go into the version's ``scores.json``
(:mod:`indexer.vectors.persistence`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.calibration import (
    CALIBRATION_QUERIES,
    CALIBRATION_SEED,
    MIN_LABELLED_CASES,
    QUERIES_FROM,
    calibration_queries,
    fit_match_calibration,
    group_codes,
    label_targets,
)
from indexer.label_ranking import LabelRanking, case_classes, choose_label_weight
from indexer.store import CaseRow, MetadataStore, VersionInfo
from indexer.vectors.arrays import FloatArray, as_unit_vectors
from indexer.vectors.index import stored_scores
from indexer.vectors.space import centre_of, centred
from labels import Task

log = logging.getLogger(__name__)

TRAINING_SPLIT = "train"  # the archive's split a checkpoint is trained on (docs/training.md)


@dataclass(frozen=True)
class VersionScores:
    """The centre (None: not centred) and the match-probability record (None: no table)."""

    centre: FloatArray | None = None
    calibration: dict[str, Any] | None = None


def version_centre(
    vectors: np.ndarray, centre: bool, base: VersionInfo | None
) -> FloatArray | None:
    """The centre of a new version: the base version's, whatever it was, for one that
    extends or trims a version (``add``, ``remove``); else, when ``centre``, the mean of its
    own ``vectors``."""
    if base is not None:
        return stored_scores(Path(base.path))[0]
    return centre_of(vectors) if centre and len(vectors) else None


@dataclass(frozen=True)
class CaseLabels:
    """What the calibration needs of each case, in the order of the version's ids."""

    labels: list[tuple[str, ...]]
    groups: list[str | None]  # hashed patient/lesion keys
    labelled: list[bool]
    held_out: list[bool]  # outside the archive's training split


def case_labels(
    store: MetadataStore, ids: Sequence[int], rows: Mapping[int, CaseRow]
) -> CaseLabels:
    """The labels, group keys, labelled and held-out flags of the cases ``ids``: from the
    rows this build writes, else from the store (a case in neither counts as unlabelled)."""
    stored = store.get_cases([int(i) for i in ids if int(i) not in rows])
    found = CaseLabels([], [], [], [])
    for case_id in (int(i) for i in ids):
        case: CaseRow | Any = rows.get(case_id) or stored.get(case_id)
        found.labels.append(tuple(case.labels) if case is not None else ())
        found.groups.append(case.group_key_hash if case is not None else None)
        found.labelled.append(bool(case.labelled) if case is not None else False)
        found.held_out.append(case is not None and case.split != TRAINING_SPLIT)
    return found


def version_scores(
    store: MetadataStore,
    task: Task | str,
    vectors: np.ndarray,
    ids: np.ndarray,
    centre: bool,
    base: VersionInfo | None,
    rows: Mapping[int, CaseRow] | None = None,
    predicted: Predicted | None = None,
) -> VersionScores:
    """The centre (:func:`version_centre`), the match-probability table and the label
    ranking of a version of ``vectors`` (the raw unit embeddings) with case ``ids``;
    ``rows``: the case rows this build writes (the others are read from the store);
    ``predicted``: the class probabilities of the cases this build embedded (a full build;
    without them, or for a version with a ``base``, the base's λ or none is kept)."""
    found = version_centre(vectors, centre, base)
    if not len(ids):
        return VersionScores(found)
    raw = as_unit_vectors(vectors, vectors.shape[1], "vectors")
    cases = case_labels(store, [int(i) for i in ids], rows or {})
    table = fit_match_calibration(
        centred(raw, found),  # the neighbours the service will show…
        cases.labels,
        cases.groups,
        Task(task),
        labelled=cases.labelled,
        held_out=cases.held_out,
        raw=raw,  # …read at their raw cosine
    )
    if table is None:
        log.info("no match probability: %d labelled cases are too few", sum(cases.labelled))
        return VersionScores(found)
    if table.queries_from != QUERIES_FROM[True]:
        log.warning(
            "the match probability is fitted on training cases (fewer than %d outside the "
            "training split): it will promise more than new images get",
            MIN_LABELLED_CASES,
        )
    record = table.record()
    ranking = (
        kept_ranking(base)
        if base is not None or predicted is None
        else label_ranking(centred(raw, found), ids, cases, Task(task), predicted)
    )
    if ranking is not None:
        record["label_ranking"] = ranking.record()
        log.info(
            "label ranking: λ %g (held-out macro P@10 %s)",
            ranking.weight,
            ", ".join(f"{w:g}: {p:.3f}" for w, p, _ in ranking.figures) or "not measured",
        )
    return VersionScores(found, record)


@dataclass(frozen=True)
class Predicted:
    """The class probabilities of the cases a build embedded, and the model's codes."""

    probabilities: Mapping[int, np.ndarray]  # case id → (C,) probabilities
    codes: Sequence[str]  # the checkpoint's label codes, in logit order


def kept_ranking(base: VersionInfo | None) -> LabelRanking | None:
    """The base version's label ranking (None: it has none, or there is no base)."""
    if base is None:
        return None
    record = stored_scores(Path(base.path))[1]
    stored = None if record is None else record.get("label_ranking")
    return None if stored is None else LabelRanking.from_record(stored)


def label_ranking(
    vectors: np.ndarray, ids: np.ndarray, cases: CaseLabels, task: Task, predicted: Predicted
) -> LabelRanking:
    """λ chosen on the version's held-out queries (:mod:`indexer.label_ranking`): the same
    sample as the match-probability table's, less any case without probabilities. Never
    on training cases: the classifier is surer of its own training images than of new
    ones, so with fewer than 50 held-out cases λ stays 0."""
    labelled = np.asarray(cases.labelled, bool)
    held_out = np.asarray(cases.held_out, bool)
    plain = LabelRanking(0.0, codes=tuple(predicted.codes), task=task.value)
    chosen, sample, from_held_out = calibration_queries(
        labelled, held_out, CALIBRATION_QUERIES, CALIBRATION_SEED
    )
    if not from_held_out:
        log.info("label ranking: fewer than %d held-out cases, λ stays 0", MIN_LABELLED_CASES)
        return plain
    known = [int(ids[chosen[q]]) in predicted.probabilities for q in sample]
    sample = sample[np.asarray(known, bool)] if len(sample) else sample
    if not len(sample):
        return plain
    labels = [cases.labels[int(i)] for i in chosen]
    classes = case_classes(labels, [True] * len(chosen), predicted.codes, task)
    probabilities = np.stack([predicted.probabilities[int(ids[chosen[q]])] for q in sample])
    return choose_label_weight(
        np.ascontiguousarray(vectors[chosen]),
        label_targets(labels, task),
        group_codes([cases.groups[int(i)] for i in chosen]),
        sample,
        probabilities,
        classes,
        task,
        predicted.codes,
    )
