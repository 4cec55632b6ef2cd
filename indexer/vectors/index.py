""":class:`VectorIndex`: inner product over unit vectors whose FAISS ids are the case ids.

It composes the package's parts: :mod:`~indexer.vectors.building` to build,
:mod:`~indexer.vectors.strategies` to search with a filter, :mod:`~indexer.vectors.gpu` for
the GPU copy, :mod:`~indexer.vectors.space` for the centre and
:mod:`~indexer.vectors.persistence` for the files. The package docstring gives the decisions.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from indexer.vectors import anatomy, gpu, strategies
from indexer.vectors.arrays import (
    FloatArray,
    IdArray,
    as_ids,
    as_unit_vectors,
    empty_result,
    finalised,
    isin_sorted,
)
from indexer.vectors.building import add_in_batches, new_index, train
from indexer.vectors.errors import VectorIndexError
from indexer.vectors.factory import IndexSpec
from indexer.vectors.ids import IdMapping, stored_ids
from indexer.vectors.parameters import apply_search_params
from indexer.vectors.persistence import read_index_file, read_scores, save_index
from indexer.vectors.sidecar import (
    Provenance,
    provenance_from_sidecar,
    read_sidecar,
    sidecar_record,
    spec_from_sidecar,
)
from indexer.vectors.space import centred, checked_centre

logger = logging.getLogger(__name__)


def stored_scores(folder: Path) -> tuple[FloatArray | None, dict[str, Any] | None]:
    """The centre and the match-probability record of the version in ``folder`` (both
    checked against its sidecar; None, None for a folder written before them), without
    reading the FAISS index."""
    sidecar = read_sidecar(Path(folder))
    scores = read_scores(Path(folder), sidecar)
    return _centre_of(scores, int(sidecar["dim"]), folder), _calibration_of(scores, folder)


def _centre_of(scores: Mapping[str, Any], dim: int, folder: Path) -> FloatArray | None:
    try:
        return checked_centre(scores.get("centre"), dim)
    except (VectorIndexError, TypeError, ValueError) as err:
        raise VectorIndexError(f"the centre stored in {folder} is not usable: {err}") from None


def _calibration_of(scores: Mapping[str, Any], folder: Path) -> dict[str, Any] | None:
    record = scores.get("match_calibration")
    if record is not None and not isinstance(record, dict):
        raise VectorIndexError(f"the match calibration stored in {folder} is not an object")
    return record


def set_search_threads(threads: int) -> None:
    """FAISS's OpenMP thread count for this process (1 for a server answering single
    queries; see the package doc)."""
    faiss.omp_set_num_threads(max(1, threads))


class VectorIndex:
    """Inner product over L2-normalised float32 vectors with int64 ids (the case ids).

    Made by :meth:`build` or :meth:`load`; see the package docstring for the decisions.
    """

    def __init__(
        self,
        index: Any,
        spec: IndexSpec,
        provenance: Provenance,
        *,
        use_gpu: bool,
        centre: FloatArray | None = None,
        calibration: Mapping[str, Any] | None = None,
    ) -> None:
        self._index = index  # the CPU index: source of truth, what save() writes
        self._spec = spec
        self._provenance = provenance
        self._centre = checked_centre(centre, spec.dim)
        self._calibration = None if calibration is None else dict(calibration)
        self._kind = anatomy.kind(index)
        self._use_gpu = use_gpu
        self._ids = IdMapping(index)
        self._gpu_index: Any = None
        if use_gpu:
            self._gpu_index = gpu.gpu_copy(index, spec.search_params, required=False)

    # ---------------------------------------------------------------- construction

    @classmethod
    def build(
        cls,
        vectors: npt.ArrayLike,
        ids: npt.ArrayLike,
        spec: IndexSpec,
        *,
        checkpoint_sha256: str,
        train_sample: int = 100_000,
        seed: int = 0,
        use_gpu: bool | None = None,
        centre: npt.ArrayLike | None = None,
        calibration: Mapping[str, Any] | None = None,
    ) -> VectorIndex:
        """Build an index of ``vectors`` (n, dim) with ``ids`` (n,) as described by ``spec``.

        With ``centre`` (:func:`~indexer.vectors.space.centre_of`), the vectors are stored
        centred on it and renormalised, and every query and added vector goes through the
        same map; ``calibration`` is a JSON record kept with the index (the
        match-probability table of :mod:`indexer.calibration`). Both are saved in
        ``scores.json``. Validates and normalises the vectors, trains on a seeded sample when
        the factory needs training (falling back to ``Flat`` when there are too few vectors),
        adds in batches with the ids, and applies ``spec.search_params`` over
        :func:`~indexer.vectors.parameters.default_search_params` (so
        ``IndexSpec("HNSW32,Flat", d)`` searches with efSearch 128, not FAISS's 16).
        """
        if not checkpoint_sha256:
            raise VectorIndexError("checkpoint_sha256 is required: an index records its model")
        start = time.perf_counter()
        created_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        on_gpu = gpu.resolve_use_gpu(use_gpu)
        stored_centre = checked_centre(centre, spec.dim)
        vecs = centred(as_unit_vectors(vectors, spec.dim, "vectors"), stored_centre)
        id_arr = as_ids(ids)
        if len(id_arr) != len(vecs):
            raise VectorIndexError(f"{len(vecs)} vectors but {len(id_arr)} ids")
        if np.unique(id_arr).size != id_arr.size:
            raise VectorIndexError("ids must be unique")

        index, effective, reason = new_index(spec, len(vecs))
        train_vectors = 0
        if not index.is_trained:
            train_vectors = train(index, vecs, train_sample, seed, gpu=on_gpu)
        apply_search_params(index, effective.search_params, effective.factory)
        add_in_batches(index, vecs, id_arr)
        provenance = Provenance(
            checkpoint_sha256=checkpoint_sha256,
            factory_requested=spec.factory,
            search_params_requested=dict(spec.search_params),
            fallback_reason=reason,
            created_at=created_at,
            build_seconds=round(time.perf_counter() - start, 3),
            train_vectors=train_vectors,
            seed=seed,
        )
        logger.info(
            "built %s index of %d vectors in %.1f s",
            effective.factory,
            index.ntotal,
            provenance.build_seconds,
        )
        return cls(
            index,
            effective,
            provenance,
            use_gpu=on_gpu,
            centre=stored_centre,
            calibration=calibration,
        )

    @classmethod
    def load(
        cls,
        folder: Path,
        *,
        expected_checkpoint_sha256: str | None = None,
        use_gpu: bool | None = None,
    ) -> VectorIndex:
        """Load ``folder/index.faiss`` after checking it against ``folder/index.json``.

        The checkpoint is checked first (cheap); then the file's size and SHA-256, FAISS's own
        reading, and the dimension, vector count and metric. Any failure is a
        :class:`VectorIndexError` naming the folder.
        """
        folder = Path(folder)
        sidecar = read_sidecar(folder)
        built_with = str(sidecar["checkpoint_sha256"])
        if expected_checkpoint_sha256 is not None and built_with != expected_checkpoint_sha256:
            raise VectorIndexError(
                f"index in {folder} was built with checkpoint {built_with[:12]}…, "
                f"the query model is {expected_checkpoint_sha256[:12]}…; rebuild the index "
                "with this checkpoint or load the matching one"
            )
        index = read_index_file(folder, sidecar)
        scores = read_scores(folder, sidecar)
        spec = spec_from_sidecar(sidecar)
        apply_search_params(index, spec.search_params, spec.factory)
        provenance = provenance_from_sidecar(sidecar)
        return cls(
            index,
            spec,
            provenance,
            use_gpu=gpu.resolve_use_gpu(use_gpu),
            centre=_centre_of(scores, spec.dim, folder),
            calibration=_calibration_of(scores, folder),
        )

    # ---------------------------------------------------------------- properties

    @property
    def ntotal(self) -> int:
        """How many vectors the index holds."""
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return self._spec.dim

    @property
    def spec(self) -> IndexSpec:
        """The index actually built (``Flat`` after a fallback) and its search parameters."""
        return self._spec

    @property
    def checkpoint_sha256(self) -> str:
        return self._provenance.checkpoint_sha256

    @property
    def centre(self) -> FloatArray | None:
        """The mean the stored vectors and every query are centred on (None: not centred)."""
        return None if self._centre is None else self._centre.copy()

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The match-probability record kept with the index (:mod:`indexer.calibration`)."""
        return None if self._calibration is None else dict(self._calibration)

    @property
    def on_gpu(self) -> bool:
        """Whether searches run on a GPU copy."""
        return self._gpu_index is not None

    @property
    def sidecar(self) -> dict[str, Any]:
        """What ``index.json`` records (without the file's size and hash, added by save)."""
        return sidecar_record(self._spec, self._provenance, self.ntotal)

    def all_ids(self) -> IdArray:
        """The ids stored, in storage order (IDMap order, or inverted-list order for IVF)."""
        return stored_ids(self._index).copy()

    # ---------------------------------------------------------------- search

    def search(
        self, queries: npt.ArrayLike, k: int, *, allowed_ids: npt.ArrayLike | None = None
    ) -> tuple[FloatArray, IdArray]:
        """Top-``k`` ids and inner-product scores for each query (rows of ``queries``).

        Returns ``(scores, ids)``, both ``(Q, k)``, best first; missing hits are id ``-1`` with
        score ``-inf``. A 1-D query is treated as one row. Queries are normalised like the
        vectors (silently) and centred on the index's centre, if it has one.

        ``allowed_ids`` restricts the hits to those ids (unknown ids are ignored), inside
        FAISS where the index allows it; :mod:`~indexer.vectors.strategies` describes the
        strategy for each kind of index (Flat, HNSW, IVF, GPU copies).
        """
        if k < 1:
            raise VectorIndexError(f"k must be at least 1, got {k}")
        raw = np.asarray(queries)
        q = as_unit_vectors(raw[None, :] if raw.ndim == 1 else raw, self.dim, "queries")
        q = centred(q, self._centre)
        if self.ntotal == 0 or len(q) == 0:
            return empty_result(len(q), k)
        if allowed_ids is None:
            return finalised(*self._search_plain(q, min(k, self.ntotal)), k=k)
        allowed = np.unique(as_ids(allowed_ids, "allowed_ids"))
        allowed = allowed[isin_sorted(allowed, self._ids.sorted_ids())]
        if allowed.size == 0:
            return empty_result(len(q), k)
        k_hits = min(k, int(allowed.size))  # FAISS allocates (Q, k) results: ask for no more
        factory = self._spec.factory
        if self._gpu_index is not None:
            found = strategies.search_gpu_filtered(
                self._gpu_index, self._ids, self._kind, factory, q, k_hits, allowed
            )
        else:
            found = strategies.search_filtered_cpu(
                self._ids, self._kind, factory, q, k_hits, allowed
            )
        return finalised(*found, k=k)

    def _search_plain(self, q: FloatArray, k: int) -> tuple[FloatArray, IdArray]:
        if self._gpu_index is not None and k <= gpu.GPU_MAX_K:
            scores, ids = self._gpu_index.search(q, k)
            return scores, ids
        return self._ids.search(q, k)

    # ---------------------------------------------------------------- changes

    def set_search_params(self, params: Mapping[str, int | float]) -> None:
        """Apply new search parameters (e.g. ``{"efSearch": 256}``); the sidecar records them."""
        try:
            apply_search_params(self._index, params, self._spec.factory)
        except VectorIndexError:
            apply_search_params(self._index, self._spec.search_params, self._spec.factory)
            raise
        self._spec = replace(self._spec, search_params={**self._spec.search_params, **params})
        self._refresh_gpu()

    def add(self, vectors: npt.ArrayLike, ids: npt.ArrayLike) -> None:
        """Add ``vectors`` with new ``ids`` (ids already in the index are refused); they are
        centred like the stored ones."""
        vecs = centred(as_unit_vectors(vectors, self.dim, "vectors"), self._centre)
        id_arr = as_ids(ids)
        if len(id_arr) != len(vecs):
            raise VectorIndexError(f"{len(vecs)} vectors but {len(id_arr)} ids")
        if np.unique(id_arr).size != id_arr.size:
            raise VectorIndexError("ids must be unique")
        present = id_arr[isin_sorted(id_arr, self._ids.sorted_ids())]
        if present.size:
            raise VectorIndexError(
                f"{present.size} ids are already in the index (e.g. {present[:5].tolist()}); "
                "remove them first"
            )
        if len(vecs) == 0:
            return
        add_in_batches(self._index, vecs, id_arr)
        self._ids.forget()
        self._refresh_gpu()

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove ``ids`` (unknown ones are ignored); returns how many were removed.

        HNSW graphs (and refine stages) cannot remove vectors: a :class:`VectorIndexError`
        says to rebuild from the stored vectors
        (:func:`~indexer.vectors.persistence.load_vectors`) without those ids.
        """
        id_arr = np.unique(as_ids(ids))
        if self._kind == "graph":
            raise VectorIndexError(
                f"a {self._spec.factory!r} index cannot remove vectors; rebuild the index "
                "without these ids (from the stored vectors, see load_vectors)"
            )
        if id_arr.size == 0:
            return 0
        try:
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(id_arr)))
        except RuntimeError as err:
            raise VectorIndexError(
                f"a {self._spec.factory!r} index cannot remove vectors ({err}); rebuild the "
                "index without these ids (from the stored vectors, see load_vectors)"
            ) from err
        self._ids.forget()
        self._refresh_gpu()
        return removed

    def _refresh_gpu(self) -> None:
        if self._use_gpu:
            self._gpu_index = gpu.gpu_copy(self._index, self._spec.search_params, required=False)

    # ---------------------------------------------------------------- files

    def save(self, folder: Path) -> None:
        """Write ``folder/index.faiss`` and ``folder/index.json`` atomically (CPU index).

        The index file is moved into place first; the sidecar holds its size and SHA-256, so
        a crash between the two moves leaves a pair that :meth:`load` refuses rather than a
        silently wrong one.
        """
        scores = {
            "centre": None if self._centre is None else self._centre.tolist(),
            "match_calibration": self._calibration,
        }
        save_index(Path(folder), self._index, self.sidecar, scores)
        logger.info("saved %s index of %d vectors to %s", self._spec.factory, self.ntotal, folder)
