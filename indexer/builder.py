"""Index versions: full reindex, incremental add, removal and pruning (docs/indexer.md).

A build never touches the active version. It embeds what it needs, decides what changes
(:func:`indexer.plan.plan_reindex`: a pure plan), writes a complete new version into a
temporary folder (FAISS index, JSON sidecar, and the raw vectors with their ids so that
later versions can be made without embedding again), renames the folder into place, and
only then — in ONE database transaction — inserts/updates/deletes the case rows and marks
the new version active. A build that fails, or a process killed at any point, therefore
leaves the previous version active and searchable; its job is marked failed (at once for
an error, by :meth:`MetadataStore.reap_stale_jobs` for a killed process) and its leftover
files are removed by :meth:`IndexBuilder.prune`.

Modes: ``full`` and ``add`` (:class:`indexer.plan.ReindexMode` says what each does), and
``remove`` (:meth:`IndexBuilder.remove`). Only one job per collection runs at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from archives.records import Archive, Sample
from dicomweb.errors import DicomwebError, PacsRefusedError
from indexer.assembly import CaseChanges, assemble_vectors, case_changes, embedded_cases
from indexer.assembly import predicted_of as predicted_probabilities
from indexer.embedding import EmbedResult, SourceUnavailableError, embed_samples
from indexer.group_keys import checked_group_salt
from indexer.plan import ReindexMode, ReindexPlan, parse_reindex_mode, plan_reindex
from indexer.pruning import prune_versions
from indexer.results import BuildResult
from indexer.scores import VersionScores, version_scores
from indexer.sources import read_source, source_name
from indexer.store import JobState, MetadataStore, VersionInfo
from indexer.vectors.factory import IndexSpec, spec_for
from indexer.vectors.index import VectorIndex
from indexer.vectors.persistence import load_vectors
from indexer.version_folders import (
    collection_folder,
    move_into_place,
    version_folder,
    write_staging_folder,
)
from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.device import DeviceError
from model.device import resolve_device as model_resolve_device

log = logging.getLogger(__name__)


class IndexBuildError(RuntimeError):
    """A build that cannot start or complete; the active version is untouched.

    ``retryable``: the same build may succeed later unchanged (another job held the
    collection, the PACS did not answer); the PACS follower waits and tries again.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class IndexerConfig:
    data_dir: Path
    group_salt: str  # MEDRET_GROUP_SALT: salts the hashed patient/lesion keys (no default)
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    bf16: bool = True
    factory: str | None = None  # None: Flat when small, else choose_factory's choice
    progress: bool = True
    centre: bool = True  # a full build centres on its mean (docs/indexer.md, "Scores")


def resolve_device(spec: str) -> torch.device:
    try:
        return model_resolve_device(spec)
    except DeviceError as exc:
        raise IndexBuildError(str(exc)) from None


def reindex_mode(mode: str) -> ReindexMode:
    """``mode`` checked (``"full"`` or ``"add"``), as an :class:`IndexBuildError` if not."""
    try:
        return parse_reindex_mode(mode)
    except ValueError as exc:
        raise IndexBuildError(str(exc)) from None


class IndexBuilder:
    def __init__(self, store: MetadataStore, cfg: IndexerConfig) -> None:
        self.store = store
        self.cfg = cfg

    # ---------------------------------------------------------------- jobs

    def _claim(self, collection_id: int | None, collection: str) -> None:
        self.store.reap_stale_jobs()
        if collection_id is not None:
            running = self.store.running_job(collection_id)
            if running is not None:
                raise IndexBuildError(
                    f"a {running.kind} job ({running.id}) is already running for collection "
                    f"{collection!r}; wait for it or check it with 'medret index --jobs'",
                    retryable=True,
                )

    def _start_job(self, kind: str, collection_id: int, job_id: str | None) -> str:
        if job_id is None:
            job_id = self.store.create_job(kind, collection_id).id
        self.store.start_job(job_id, pid=os.getpid(), host=socket.gethostname())
        return job_id

    def _fail(self, job_id: str, exc: BaseException) -> None:
        self.store.finish_job(job_id, state=JobState.FAILED, errors=[str(exc)], message=str(exc))

    # ---------------------------------------------------------------- versions

    def _write_version(
        self,
        collection_id: int,
        collection: str,
        vectors: np.ndarray,
        ids: np.ndarray,
        spec: IndexSpec,
        checkpoint_sha256: str,
        job_id: str,
        scores: VersionScores,
    ) -> tuple[int, int, VectorIndex]:
        """Build and save a complete version folder; returns (version row id, number, index)."""
        base = collection_folder(self.cfg.data_dir, collection).resolve()
        number = self.store.next_version_number(collection_id)
        folder = version_folder(base, number, job_id)
        version = self.store.create_version(
            collection_id,
            path=str(folder),
            checkpoint_sha256=checkpoint_sha256,
            factory=spec.factory,
            params={"search": dict(spec.search_params), "job": job_id},
        )
        number = version.version
        try:
            index = VectorIndex.build(
                vectors,
                ids,
                spec,
                checkpoint_sha256=checkpoint_sha256,
                centre=scores.centre,
                calibration=scores.calibration,
            )
            staging = write_staging_folder(folder, job_id, index, vectors, ids)
            if folder.exists():
                raise IndexBuildError(f"{folder} already exists; another build uses it")
            move_into_place(staging, folder)
        except Exception as exc:
            self.store.fail_version(version.id, str(exc))
            raise
        return version.id, number, index

    def _spec_for(self, n: int, dim: int, active_factory: str | None) -> IndexSpec:
        return spec_for(n, dim, self.cfg.factory or active_factory)

    def _check_active_unchanged(self, collection_id: int, before: VersionInfo | None) -> None:
        """Refuse to activate on top of a version another job activated meanwhile."""
        now = self.store.active_version(collection_id)
        if (now.id if now else None) != (before.id if before else None):
            raise IndexBuildError(
                "another job activated a new version while this one was building; run it again"
            )

    # ---------------------------------------------------------------- build

    def build(
        self,
        collection: str,
        checkpoint: Path,
        source: Path | str,
        *,
        layout: str = "auto",
        mode: str = "full",
        job_id: str | None = None,
        labels: Path | None = None,
        archive: Archive | None = None,
        loaded: LoadedCheckpoint | None = None,
    ) -> BuildResult:
        """Index ``source`` into ``collection`` (``mode`` "full" or "add"; module doc).

        ``source`` is a folder or file of any layout, or a DICOMweb source
        (``dicomweb+http://…``, labelled from the ``labels`` table if one is given). A
        caller that has already read the archive (the PACS follower: just the new
        instances) passes it as ``archive``, and may pass the checkpoint it loaded.
        """
        reindex = reindex_mode(mode)
        salt = checked_group_salt(self.cfg.group_salt)  # a missing or weak one stops it here
        started = time.perf_counter()
        if loaded is None:
            loaded = load_checkpoint(checkpoint, resolve_device(self.cfg.device))
        if archive is None:
            archive = read_source(source, layout, labels)
        existing = {c.name: c for c in self.store.list_collections()}
        coll = existing.get(collection)
        self._claim(coll.id if coll else None, collection)
        if coll is None:
            coll = self.store.ensure_collection(
                collection,
                checkpoint_sha256=loaded.sha256,
                checkpoint_path=str(checkpoint.resolve()),
                task=loaded.meta.model.task.value,
                label_codes=list(loaded.meta.labels.codes),
                label_names=list(loaded.meta.labels.names),
            )
        self.store.check_group_salt(coll.id, salt, adding=reindex is ReindexMode.ADD)
        active = self.store.active_version(coll.id)
        if (
            reindex is ReindexMode.ADD
            and active is not None
            and active.checkpoint_sha256 != loaded.sha256
        ):
            raise IndexBuildError(
                f"collection {collection!r} is indexed with checkpoint "
                f"{active.checkpoint_sha256[:12]}…, not {loaded.sha256[:12]}…; --add needs the "
                "same checkpoint (run a full reindex to change it)"
            )
        job = self._start_job(reindex.value, coll.id, job_id)
        try:
            result = self._build(coll.id, collection, loaded, checkpoint, archive, reindex, job)
        except BaseException as exc:
            self._fail(job, exc)
            if isinstance(exc, IndexBuildError | KeyboardInterrupt):
                raise
            if isinstance(exc, SourceUnavailableError | DicomwebError):
                refused = isinstance(exc, PacsRefusedError) or getattr(exc, "refused", False)
                raise IndexBuildError(
                    f"indexing {source_name(source)} stopped: {exc}; the previous version "
                    "stays active — run it again when the PACS answers",
                    retryable=not refused,
                ) from exc
            raise IndexBuildError(f"indexing {source_name(source)} failed: {exc}") from exc
        result.seconds = time.perf_counter() - started
        self.store.finish_job(
            job,
            state=JobState.SUCCEEDED,
            counts=result.counts(),
            errors=[f"{k}: {r}" for k, r in result.failed[:1000]],
        )
        return result

    def _build(
        self,
        collection_id: int,
        collection: str,
        loaded: LoadedCheckpoint,
        checkpoint: Path,
        archive: Archive,
        mode: ReindexMode,
        job_id: str,
    ) -> BuildResult:
        """Embed → plan → assemble the vectors → write the version → activate it."""
        known = self.store.existing_hashes(collection_id)  # content hash → case id
        active = self.store.active_version(collection_id)
        samples = list(archive.samples)
        indexed_remote = 0
        if mode is ReindexMode.ADD:
            # a PACS instance is named for good by its SOPInstanceUID: one already indexed
            # is not retrieved again just to hash it
            remote_keys = [s.key for s in samples if s.remote is not None]
            in_use = (
                set(self.store.external_ids(collection_id, remote_keys)) if remote_keys else set()
            )
            kept = [s for s in samples if s.remote is None or s.key not in in_use]
            indexed_remote = len(samples) - len(kept)
            samples = kept
        embedded = self._embed(loaded, samples, known, mode, job_id)
        plan = self._plan(collection_id, mode, samples, embedded, known, active)
        _check_carried(plan, embedded, active, loaded.sha256)
        changes = case_changes(plan, samples, embedded, self.cfg.group_salt)
        dim = loaded.meta.model.embed_dim
        vectors, ids = assemble_vectors(plan, embedded, active, dim)
        spec = self._spec_for(
            len(ids), dim, active.factory if (active and mode is ReindexMode.ADD) else None
        )
        base = active if mode is ReindexMode.ADD else None  # a full build centres anew
        rows = {row.id: row for row in [*changes.new_rows, *changes.updates.values()]}
        task, centre = loaded.meta.model.task, self.cfg.centre
        predicted = None if base else predicted_probabilities(plan, embedded, loaded)  # λ
        scores = version_scores(self.store, task, vectors, ids, centre, base, rows, predicted)
        self.store.update_job(job_id, progress=0.92, message="building the FAISS index")
        version_id, number, _ = self._write_version(
            collection_id, collection, vectors, ids, spec, loaded.sha256, job_id, scores
        )
        try:
            self._activate(
                collection_id, active, version_id, len(ids), loaded, checkpoint, plan, changes
            )
        except BaseException as exc:
            self.store.fail_version(version_id, str(exc))
            raise
        log.info("collection %s: version %d active with %d vectors", collection, number, len(ids))
        return BuildResult(
            job_id=job_id,
            collection=collection,
            mode=mode.value,
            version=number,
            vector_count=len(ids),
            added=len(changes.new_rows),
            updated=len(changes.updates),
            deleted=len(plan.removed),
            skipped_known=len(embedded.known) + indexed_remote,
            duplicates=len(embedded.duplicates),
            conflicts=list(plan.conflicts),
            failed=list(embedded.failed),
            dropped_columns=list(archive.dropped_columns),
            skipped_files=dict(archive.skipped),
            images_per_s=embedded.images_per_s,
            factory=spec.factory,
        )

    def _embed(
        self,
        loaded: LoadedCheckpoint,
        samples: Sequence[Sample],
        known: Mapping[str, int],
        mode: ReindexMode,
        job_id: str,
    ) -> EmbedResult:
        """Embed the samples (ADD: only content not indexed yet), reporting job progress."""

        def progress(done: int, total: int) -> None:
            self.store.update_job(
                job_id, progress=0.9 * done / max(total, 1), counts={"seen": done, "total": total}
            )

        return embed_samples(
            loaded.model,
            loaded.meta.preprocessing,
            samples,
            device=next(loaded.model.parameters()).device,
            batch_size=self.cfg.batch_size,
            workers=self.cfg.workers,
            bf16=self.cfg.bf16,
            known_hashes=frozenset(known) if mode is ReindexMode.ADD else frozenset(),
            progress=self.cfg.progress,
            on_progress=progress,
        )

    def _plan(
        self,
        collection_id: int,
        mode: ReindexMode,
        samples: Sequence[Sample],
        embedded: EmbedResult,
        known: Mapping[str, int],
        active: VersionInfo | None,
    ) -> ReindexPlan:
        """The reindex plan from what was embedded and what SQL holds, with new ids reserved."""
        cases = embedded_cases(embedded, samples)
        unread = sorted({key for key, _ in embedded.failed})
        full = mode is ReindexMode.FULL
        draft = plan_reindex(
            mode,
            cases,
            known,
            duplicate_hashes=[content_hash for _, content_hash in embedded.duplicates],
            unread_case_ids=(
                self.store.find_case_ids(collection_id, external_ids=unread)
                if full and unread
                else ()
            ),
            external_ids_in_use=() if full else self.store.external_ids(collection_id),
            has_active=active is not None,
        )
        return draft.with_new_ids(self.store.reserve_ids(len(draft.new)) if draft.new else [])

    def _activate(
        self,
        collection_id: int,
        active: VersionInfo | None,
        version_id: int,
        vector_count: int,
        loaded: LoadedCheckpoint,
        checkpoint: Path,
        plan: ReindexPlan,
        changes: CaseChanges,
    ) -> None:
        """The one transaction that changes what queries see (module docstring)."""
        self._check_active_unchanged(collection_id, active)
        with self.store.session() as session:
            self.store.record_group_salt(session, collection_id, self.cfg.group_salt)
            if plan.removed:
                self.store.delete_cases(session, list(plan.removed))
            if changes.updates:
                # external ids may move between cases (renames, swaps): park them first
                parked = [
                    dataclasses.replace(row, external_id=f"__moving__{row.id}")
                    for row in changes.updates.values()
                ]
                self.store.update_cases(session, parked)
                session.flush()
                self.store.update_cases(session, list(changes.updates.values()))
            self.store.add_cases(session, changes.new_rows, collection_id=collection_id)
            if plan.mode is ReindexMode.FULL:
                self.store.set_collection_checkpoint(
                    session,
                    collection_id,
                    checkpoint_sha256=loaded.sha256,
                    checkpoint_path=str(checkpoint.resolve()),
                )
            self.store.activate_version(session, version_id, vector_count)

    # ---------------------------------------------------------------- remove / prune

    def remove(
        self,
        collection: str,
        *,
        case_ids: Sequence[int] = (),
        external_ids: Sequence[str] = (),
        job_id: str | None = None,
    ) -> BuildResult:
        """Delete cases from SQL and make a new version without their vectors."""
        started = time.perf_counter()
        coll = self.store.get_collection(collection)
        self._claim(coll.id, collection)
        active = self.store.active_version(coll.id)
        if active is None:
            raise IndexBuildError(f"collection {collection!r} has no active index version")
        ids = self.store.find_case_ids(coll.id, external_ids=external_ids, case_ids=case_ids)
        if not ids:
            asked = [*map(str, case_ids), *external_ids]
            raise IndexBuildError(f"no case in {collection!r} matches {asked}")
        job = self._start_job("remove", coll.id, job_id)
        try:
            vectors, vec_ids = load_vectors(Path(active.path))
            keep = ~np.isin(vec_ids, np.asarray(ids, dtype=np.int64))
            spec = self._spec_for(
                int(keep.sum()), vectors.shape[1] if vectors.ndim == 2 else 0, active.factory
            )
            kept = vectors[keep], vec_ids[keep]
            scores = version_scores(self.store, coll.task, *kept, self.cfg.centre, active)
            version_id, number, _ = self._write_version(
                coll.id,
                collection,
                vectors[keep],
                vec_ids[keep],
                spec,
                active.checkpoint_sha256,
                job,
                scores,
            )
            self._check_active_unchanged(coll.id, active)
            with self.store.session() as session:
                deleted = self.store.delete_cases(session, ids)
                self.store.activate_version(session, version_id, int(keep.sum()))
        except BaseException as exc:
            self._fail(job, exc)
            raise
        result = BuildResult(
            job_id=job,
            collection=collection,
            mode="remove",
            version=number,
            vector_count=int(keep.sum()),
            deleted=deleted,
            factory=spec.factory,
            seconds=time.perf_counter() - started,
        )
        self.store.finish_job(job, state=JobState.SUCCEEDED, counts=result.counts())
        return result

    def prune(self, collection: str, *, keep: int = 1) -> list[int]:
        """Delete the files of all but the active and the ``keep`` newest ready versions, and
        of failed or abandoned builds; returns the version numbers pruned."""
        coll = self.store.get_collection(collection)
        self._claim(coll.id, collection)
        return prune_versions(self.store, self.cfg.data_dir, coll, keep)


# --------------------------------------------------------------------------- build steps


def _check_carried(
    plan: ReindexPlan, embedded: EmbedResult, active: VersionInfo | None, checkpoint_sha256: str
) -> None:
    """Cases kept for a file that failed to read need their old vector, from this model."""
    if plan.carried and (active is None or active.checkpoint_sha256 != checkpoint_sha256):
        unread = sorted({key for key, _ in embedded.failed})
        raise IndexBuildError(
            f"{len(plan.carried)} indexed file(s) could not be read this time (e.g. "
            f"{unread[0]}); they cannot be re-embedded with the new "
            "checkpoint — fix them or remove the cases first"
        )
