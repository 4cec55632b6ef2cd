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

from indexer.calibration import MIN_LABELLED_CASES, QUERIES_FROM, fit_match_calibration
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
) -> VersionScores:
    """The centre (:func:`version_centre`) and the match-probability table of a version of
    ``vectors`` (the raw unit embeddings) with case ``ids``; ``rows``: the case rows this
    build writes (the others are read from the store)."""
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
    return VersionScores(found, table.record())
