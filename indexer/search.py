"""The search interface the service uses: query embeddings → ranked cases.

:class:`CollectionIndex` holds one collection's active version (loaded once; the service
swaps in a new object when a new version becomes active, so one query never mixes
versions). The embedding model that made the query must be the checkpoint the index was
built with — a mismatch is an error, never a silently meaningless result.

Filters (``label``, ``split``, or any metadata key such as ``modality``) are resolved to
the set of matching case ids in SQL and applied *inside* FAISS through an ID selector,
so a filtered query still returns the top-K among the matching cases.

A hit's ``score`` is the cosine of the query and the case in the space the version
searches: centred on the version's stored mean when it was built so (the
:class:`~indexer.vectors.index.VectorIndex` centres the query itself). It ranks the hits,
unless the version has a label term and the caller gives the queries' class
probabilities: then the hits are ranked by the score + λ × log P(the query has the case's
diagnosis) (:mod:`indexer.label_ranking`, exact: the candidates widen until no case
further down could rank higher), and each keeps its cosine as ``score``.
Its ``match_probability`` is the version's calibrated P(the case shares the query's
diagnosis | x) (:mod:`indexer.calibration`), where x is what the table ``reads``: the
**raw cosine** of the query's embedding as the model returned it and the case's stored
raw vector (``vectors.npy``, memory-mapped, :class:`~indexer.vectors.stored.StoredVectors`)
for a table that says so, else (a table written before ``reads``, or a version that is
not centred, where the two are one) the score. So the probability need not fall with the
rank. None when the version has no table (an unlabelled or tiny collection) and for an
unlabelled case, which has no diagnosis to share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.calibration import RAW_COSINE, CalibrationError, MatchCalibration
from indexer.label_ranking import (
    CaseDiagnoses,
    LabelRanking,
    LabelRankingError,
    distinct_rows,
    label_ranked,
)
from indexer.store import CaseInfo, CollectionInfo, MetadataStore, VersionInfo
from indexer.vectors.arrays import as_unit_vectors
from indexer.vectors.errors import VectorIndexError
from indexer.vectors.index import VectorIndex
from indexer.vectors.stored import StoredVectors
from labels import Task


class SearchError(RuntimeError):
    """A query that cannot be answered (no active version, wrong model, bad filter)."""


@dataclass(frozen=True)
class Hit:
    rank: int  # 1-based
    case_id: int
    score: float  # inner product of unit (centred) vectors: cosine similarity in [-1, 1]
    case: CaseInfo
    match_probability: float | None = None  # P(same diagnosis | raw cosine); module docstring


@dataclass
class CollectionIndex:
    collection: CollectionInfo
    version: VersionInfo
    index: VectorIndex
    calibration: MatchCalibration | None = None
    raw_vectors: StoredVectors | None = None  # when the table reads raw cosines of a centred one
    ranking: LabelRanking = field(default_factory=lambda: LabelRanking(0.0))
    diagnoses: CaseDiagnoses | None = None  # every case's diagnosis, when ranking is active

    @classmethod
    def load(cls, store: MetadataStore, name: str) -> CollectionIndex:
        collection = store.get_collection(name)
        version = store.active_version(collection.id)
        if version is None:
            raise SearchError(f"collection {name!r} has no active index version yet")
        index = VectorIndex.load(
            Path(version.path), expected_checkpoint_sha256=version.checkpoint_sha256
        )
        record = index.calibration
        try:
            calibration = None if record is None else MatchCalibration.from_record(record)
        except CalibrationError as exc:
            raise SearchError(f"index version in {version.path}: {exc}") from None
        raw = None
        if calibration is not None and calibration.reads == RAW_COSINE and index.centre is not None:
            raw = raw_vectors_of(Path(version.path), index)
        try:
            ranking = LabelRanking.from_record(
                None if record is None else record.get("label_ranking")
            )
        except LabelRankingError as exc:
            raise SearchError(f"index version in {version.path}: {exc}") from None
        diagnoses = None
        if ranking.active:  # the codes and task λ was chosen with, not the collection's
            rows = store.case_diagnoses(collection.id)
            diagnoses = CaseDiagnoses.of(rows, ranking.codes, Task(ranking.task))
        return cls(collection, version, index, calibration, raw, ranking, diagnoses)

    @property
    def centre(self) -> np.ndarray | None:
        """The mean the version's vectors and queries are centred on (None: not centred)."""
        return self.index.centre

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def search(
        self,
        store: MetadataStore,
        embeddings: np.ndarray,
        *,
        checkpoint_sha256: str,
        top_k: int = 10,
        filters: Mapping[str, str] | None = None,
        probabilities: np.ndarray | None = None,
    ) -> list[list[Hit]]:
        """Top-``top_k`` cases for each query embedding (rows of ``embeddings``), ranked by
        the cosine, or with the queries' class ``probabilities`` (rows) by the version's
        label-aware rank score when it has one (:mod:`indexer.label_ranking`)."""
        if checkpoint_sha256 != self.version.checkpoint_sha256:
            raise SearchError(
                f"the query embeddings come from checkpoint {checkpoint_sha256[:12]}…, but "
                f"collection {self.collection.name!r} is indexed with "
                f"{self.version.checkpoint_sha256[:12]}…"
            )
        if top_k < 1:
            raise SearchError(f"top_k must be at least 1, got {top_k}")
        allowed: np.ndarray | None = None
        if filters:
            ids = store.case_ids_matching(self.collection.id, dict(filters))
            allowed = np.asarray(ids, dtype=np.int64)
            if not len(allowed):
                return [[] for _ in range(len(embeddings))]
        queries = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        if probabilities is not None and self.ranking.active and self.diagnoses is not None:
            scores, ids_found = self._label_ranked(queries, probabilities, top_k, allowed)
        else:
            scores, ids_found = self.index.search(queries, top_k, allowed_ids=allowed)
        wanted: Sequence[int] = sorted({int(i) for i in ids_found.ravel() if i >= 0})
        cases = store.get_cases(wanted)
        results: list[list[Hit]] = []
        raw_queries = None
        if self.raw_vectors is not None and self.calibration is not None:
            raw_queries = as_unit_vectors(queries, self.index.dim, "queries")
        for q, (row_scores, row_ids) in enumerate(zip(scores, ids_found, strict=True)):
            readings = (
                row_scores.astype(np.float64)
                if raw_queries is None or self.raw_vectors is None
                else self.raw_vectors.cosines(raw_queries[q], row_ids)
            )  # what the table reads: the raw cosine, or the score (module docstring)
            hits: list[Hit] = []
            for score, case_id, x in zip(row_scores, row_ids, readings, strict=True):
                case = cases.get(int(case_id))
                if case_id < 0 or case is None:  # removed since this version was loaded
                    continue
                probability = self._probability(float(x), case)
                hits.append(Hit(len(hits) + 1, int(case_id), float(score), case, probability))
            results.append(hits)
        return results

    def _label_ranked(
        self, queries: np.ndarray, probabilities: np.ndarray, top_k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Q, top_k) cosines and ids ranked by the rank score (id -1: no more cases)."""
        assert self.diagnoses is not None
        rows = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
        if rows.shape != (len(queries), len(self.ranking.codes)):
            raise SearchError(
                f"{rows.shape} class probabilities for {len(queries)} queries: the version's "
                f"label ranking needs one row of {len(self.ranking.codes)} per query"
            )
        total = self.size if allowed is None else len(allowed)
        distinct = (
            self.diagnoses.distinct
            if allowed is None
            else distinct_rows(self.diagnoses.rows(allowed))
        )
        scores = np.full((len(queries), top_k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), top_k), -1, dtype=np.int64)
        for q, query in enumerate(queries):

            def search(k: int, query: np.ndarray = query) -> tuple[np.ndarray, np.ndarray]:
                found = self.index.search(query[None, :], k, allowed_ids=allowed)
                return found[0][0], found[1][0]

            cosines, found = label_ranked(
                search, total, rows[q], self.diagnoses, self.ranking.weight, top_k, distinct
            )
            scores[q, : len(found)], ids[q, : len(found)] = cosines, found
        return scores, ids

    def _probability(self, x: float, case: CaseInfo) -> float | None:
        if self.calibration is None or not case.labelled or not np.isfinite(x):
            return None
        return float(self.calibration.predict(x))


def raw_vectors_of(folder: Path, index: VectorIndex) -> StoredVectors:
    """The raw vectors of the version in ``folder``, checked against its ``index``."""
    try:
        raw = StoredVectors.load(folder)
    except VectorIndexError as exc:
        raise SearchError(
            f"index version in {folder}: its match probability reads raw cosines, but {exc}"
        ) from None
    if len(raw) != index.ntotal or raw.dim != index.dim:
        raise SearchError(
            f"index version in {folder}: vectors.npy holds {len(raw)} vectors of {raw.dim} "
            f"dimensions, the index {index.ntotal} of {index.dim}"
        )
    return raw
