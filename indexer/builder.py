"""Index versions: full reindex, incremental add, removal and pruning (DESIGN.md §6).

A build never touches the active version. It embeds what it needs, writes a complete new
version into a temporary folder (FAISS index, JSON sidecar, and the raw vectors with their
ids so that later versions can be made without embedding again), renames the folder into
place, and only then — in ONE database transaction — inserts/updates/deletes the case
rows and marks the new version active. A build that fails, or a process killed at any
point, therefore leaves the previous version active and searchable; its job is marked
failed (at once for an error, by :meth:`MetadataStore.reap_stale_jobs` for a killed
process) and its leftover files are removed by :meth:`IndexBuilder.prune`.

Modes:

* ``full`` — the collection becomes exactly the archive: every image is embedded with the
  given checkpoint; cases whose content is already known keep their id (and get the
  archive's current labels and metadata), new ones get new ids, and cases no longer in
  the archive are deleted. A new checkpoint is adopted here, and only here.
* ``add`` — only images whose content hash is new are embedded and appended to a copy of
  the active version; the same image twice is one case. The checkpoint must be the one
  the active version was built with.
* ``remove`` — cases (by id or external id, e.g. consent withdrawn) are deleted from SQL
  and left out of a new version made from the stored vectors.

Only one job per collection runs at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexer.embedding import embed_samples
from indexer.store import CaseRow, MetadataStore, hash_group_key
from indexer.vector_index import (
    IndexSpec,
    VectorIndex,
    choose_factory,
    load_vectors,
    save_vectors,
)
from model.archives import Archive, Sample, is_identifying_key, read_archive
from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.device import DeviceError
from model.device import resolve_device as model_resolve_device

log = logging.getLogger(__name__)


class IndexBuildError(RuntimeError):
    """A build that cannot start or complete; the active version is untouched."""


@dataclass(frozen=True)
class IndexerConfig:
    data_dir: Path
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    bf16: bool = True
    factory: str | None = None  # None: Flat when small, else choose_factory's choice
    group_salt: str = "medret"  # salts the hashed patient/lesion keys
    progress: bool = True


@dataclass
class BuildResult:
    job_id: str
    collection: str
    mode: str
    version: int
    vector_count: int
    added: int = 0
    updated: int = 0
    deleted: int = 0
    skipped_known: int = 0
    duplicates: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float = 0.0
    factory: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(spec: str) -> torch.device:
    try:
        return model_resolve_device(spec)
    except DeviceError as exc:
        raise IndexBuildError(str(exc)) from None


def collection_folder(data_dir: Path, collection: str) -> Path:
    return data_dir / "indexes" / collection


class IndexBuilder:
    def __init__(self, store: MetadataStore, cfg: IndexerConfig) -> None:
        self.store = store
        self.cfg = cfg

    # ---------------------------------------------------------------- helpers

    def _claim(self, collection_id: int | None, collection: str) -> None:
        self.store.reap_stale_jobs()
        if collection_id is not None:
            running = self.store.running_job(collection_id)
            if running is not None:
                raise IndexBuildError(
                    f"a {running.kind} job ({running.id}) is already running for collection "
                    f"{collection!r}; wait for it or check it with 'medret index --jobs'"
                )

    def _start_job(self, kind: str, collection_id: int, job_id: str | None) -> str:
        if job_id is None:
            job_id = self.store.create_job(kind, collection_id).id
        self.store.start_job(job_id, pid=os.getpid(), host=socket.gethostname())
        return job_id

    def _write_version(
        self,
        collection_id: int,
        collection: str,
        vectors: np.ndarray,
        ids: np.ndarray,
        spec: IndexSpec,
        checkpoint_sha256: str,
        job_id: str,
    ) -> tuple[int, int, VectorIndex]:
        """Build and save a complete version folder; returns (version row id, number, index)."""
        base = collection_folder(self.cfg.data_dir, collection).resolve()
        number = self.store.next_version_number(collection_id)
        folder = base / f"v{number:04d}-{job_id[:8]}"
        version = self.store.create_version(
            collection_id,
            path=str(folder),
            checkpoint_sha256=checkpoint_sha256,
            factory=spec.factory,
            params={"search": dict(spec.search_params), "job": job_id},
        )
        number = version.version
        try:
            index = VectorIndex.build(vectors, ids, spec, checkpoint_sha256=checkpoint_sha256)
            tmp = folder.with_name(f"{folder.name}.tmp-{job_id[:8]}")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            index.save(tmp)
            save_vectors(tmp, vectors, ids)
            if folder.exists():
                raise IndexBuildError(f"{folder} already exists; another build uses it")
            tmp.rename(folder)
        except Exception as exc:
            self.store.fail_version(version.id, str(exc))
            raise
        return version.id, number, index

    def _spec_for(self, n: int, dim: int, active_factory: str | None) -> IndexSpec:
        factory = self.cfg.factory or active_factory
        if factory is None:
            return choose_factory(n, dim)
        chosen = choose_factory(n, dim)
        params = chosen.search_params if chosen.factory == factory else {}
        return IndexSpec(factory=factory, dim=dim, search_params=params)

    def _fail(self, job_id: str, exc: BaseException) -> None:
        self.store.finish_job(job_id, state="failed", errors=[str(exc)], message=str(exc))

    # ---------------------------------------------------------------- build

    def build(
        self,
        collection: str,
        checkpoint: Path,
        source: Path,
        *,
        layout: str = "auto",
        mode: str = "full",
        job_id: str | None = None,
    ) -> BuildResult:
        """Index ``source`` into ``collection`` (``mode`` "full" or "add"; module doc)."""
        if mode not in ("full", "add"):
            raise IndexBuildError(f"mode is 'full' or 'add', not {mode!r}")
        started = time.perf_counter()
        device = resolve_device(self.cfg.device)
        loaded = load_checkpoint(checkpoint, device)
        archive = read_archive(source, layout)
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
        active = self.store.active_version(coll.id)
        if mode == "add" and active is not None and active.checkpoint_sha256 != loaded.sha256:
            raise IndexBuildError(
                f"collection {collection!r} is indexed with checkpoint "
                f"{active.checkpoint_sha256[:12]}…, not {loaded.sha256[:12]}…; --add needs the "
                "same checkpoint (run a full reindex to change it)"
            )
        job = self._start_job(mode, coll.id, job_id)
        try:
            result = self._build(coll.id, collection, loaded, checkpoint, archive, mode, job)
        except BaseException as exc:
            self._fail(job, exc)
            if isinstance(exc, IndexBuildError | KeyboardInterrupt):
                raise
            raise IndexBuildError(f"indexing {source} failed: {exc}") from exc
        result.seconds = time.perf_counter() - started
        self.store.finish_job(
            job,
            state="succeeded",
            counts=_counts(result),
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
        mode: str,
        job_id: str,
    ) -> BuildResult:
        known = self.store.existing_hashes(collection_id)  # content hash → case id
        active = self.store.active_version(collection_id)
        samples = list(archive.samples)

        def progress(done: int, total: int) -> None:
            self.store.update_job(
                job_id, progress=0.9 * done / max(total, 1), counts={"seen": done, "total": total}
            )

        embedded = embed_samples(
            loaded.model,
            loaded.meta.preprocessing,
            samples,
            device=next(loaded.model.parameters()).device,
            batch_size=self.cfg.batch_size,
            workers=self.cfg.workers,
            bf16=self.cfg.bf16,
            known_hashes=frozenset(known) if mode == "add" else frozenset(),
            progress=self.cfg.progress,
            on_progress=progress,
        )
        result = BuildResult(
            job_id=job_id,
            collection=collection,
            mode=mode,
            version=0,
            vector_count=0,
            skipped_known=len(embedded.known),
            duplicates=len(embedded.duplicates),
            failed=list(embedded.failed),
            images_per_s=embedded.images_per_s,
        )
        external = self._external_ids(collection_id) if mode == "add" else {}
        new_rows: list[CaseRow] = []
        updates: dict[int, CaseRow] = {}
        vec_ids: list[int] = []
        keep_vectors: list[int] = []
        fresh = [
            (pos, i, h)
            for pos, (i, h) in enumerate(zip(embedded.indices, embedded.hashes, strict=True))
            if h not in known
        ]
        if mode == "add":  # an external id already used by other content is a conflict
            clean = []
            for pos, i, h in fresh:
                key = samples[i].key
                if key in external:
                    result.conflicts.append(
                        (key, "already indexed with other content; remove it first")
                    )
                else:
                    clean.append((pos, i, h))
            fresh = clean
        new_ids = self.store.reserve_ids(len(fresh)) if fresh else []
        for (pos, i, h), case_id in zip(fresh, new_ids, strict=True):
            new_rows.append(self._row(case_id, samples[i], h, embedded.metadata[pos]))
            vec_ids.append(case_id)
            keep_vectors.append(pos)
        if mode == "full":
            for pos, (i, h) in enumerate(zip(embedded.indices, embedded.hashes, strict=True)):
                if h in known:
                    updates[known[h]] = self._row(known[h], samples[i], h, embedded.metadata[pos])
                    vec_ids.append(known[h])
                    keep_vectors.append(pos)
        vectors = (
            embedded.vectors[keep_vectors]
            if keep_vectors
            else np.zeros((0, loaded.meta.model.embed_dim), np.float32)
        )
        ids = np.asarray(vec_ids, dtype=np.int64)
        if mode == "add" and active is not None:
            base_vectors, base_ids = load_vectors(Path(active.path))
            vectors = np.concatenate([base_vectors, vectors]) if len(vectors) else base_vectors
            ids = np.concatenate([base_ids, ids])
        deleted: list[int] = []
        if mode == "full":
            # cases whose content is gone from the archive; a file that merely failed to
            # read this time keeps its case (and its old vector, see below)
            present = set(embedded.hashes) | {h for _, h in embedded.duplicates}
            unread = {key for key, _ in embedded.failed}
            gone = {case_id for h, case_id in known.items() if h not in present}
            kept_unread = (
                set(self.store.find_case_ids(collection_id, external_ids=sorted(unread))) & gone
                if unread
                else set()
            )
            deleted = sorted(gone - kept_unread)
            if kept_unread:
                if active is None or active.checkpoint_sha256 != loaded.sha256:
                    raise IndexBuildError(
                        f"{len(kept_unread)} indexed file(s) could not be read this time (e.g. "
                        f"{sorted(unread)[0]}); they cannot be re-embedded with the new "
                        "checkpoint — fix them or remove the cases first"
                    )
                old_vectors, old_ids = load_vectors(Path(active.path))
                mask = np.isin(old_ids, np.asarray(sorted(kept_unread), dtype=np.int64))
                vectors = np.concatenate([vectors, old_vectors[mask]])
                ids = np.concatenate([ids, old_ids[mask]])
        spec = self._spec_for(
            len(ids),
            loaded.meta.model.embed_dim,
            active.factory if (active and mode == "add") else None,
        )
        self.store.update_job(job_id, progress=0.92, message="building the FAISS index")
        version_id, number, _ = self._write_version(
            collection_id, collection, vectors, ids, spec, loaded.sha256, job_id
        )
        try:
            self._activate(
                collection_id,
                active,
                version_id,
                len(ids),
                loaded,
                checkpoint,
                mode,
                deleted,
                updates,
                new_rows,
            )
        except BaseException as exc:
            self.store.fail_version(version_id, str(exc))
            raise
        result.version = number
        result.vector_count = len(ids)
        result.added = len(new_rows)
        result.updated = len(updates)
        result.deleted = len(deleted)
        result.factory = spec.factory
        log.info("collection %s: version %d active with %d vectors", collection, number, len(ids))
        return result

    def _activate(
        self,
        collection_id: int,
        active: Any,
        version_id: int,
        vector_count: int,
        loaded: LoadedCheckpoint,
        checkpoint: Path,
        mode: str,
        deleted: list[int],
        updates: dict[int, CaseRow],
        new_rows: list[CaseRow],
    ) -> None:
        """The one transaction that changes what queries see (module docstring)."""
        self._check_active_unchanged(collection_id, active)
        with self.store.session() as session:
            if deleted:
                self.store.delete_cases(session, deleted)
            if updates:
                # external ids may move between cases (renames, swaps): park them first
                parked = [
                    dataclasses.replace(row, external_id=f"__moving__{row.id}")
                    for row in updates.values()
                ]
                self.store.update_cases(session, parked)
                session.flush()
                self.store.update_cases(session, list(updates.values()))
            self.store.add_cases(session, new_rows, collection_id=collection_id)
            if mode == "full":
                self.store.set_collection_checkpoint(
                    session,
                    collection_id,
                    checkpoint_sha256=loaded.sha256,
                    checkpoint_path=str(checkpoint.resolve()),
                )
            self.store.activate_version(session, version_id, vector_count)

    def _check_active_unchanged(self, collection_id: int, before: Any) -> None:
        """Refuse to activate on top of a version another job activated meanwhile."""
        now = self.store.active_version(collection_id)
        if (now.id if now else None) != (before.id if before else None):
            raise IndexBuildError(
                "another job activated a new version while this one was building; run it again"
            )

    def _external_ids(self, collection_id: int) -> set[str]:
        return set(self.store.external_ids(collection_id))

    def _row(
        self, case_id: int, sample: Sample, content_hash: str, decoded_meta: Mapping[str, str]
    ) -> CaseRow:
        meta = {
            k: v
            for k, v in {**dict(sample.metadata), **dict(decoded_meta)}.items()
            if not is_identifying_key(k)
        }
        return CaseRow(
            id=case_id,
            external_id=sample.key,
            source_uri=str(sample.path)
            if sample.path is not None
            else sample.array.uri
            if sample.array
            else sample.key,
            content_hash=content_hash,
            labels=list(sample.labels),
            split=sample.split,
            meta=meta,
            group_key_hash=hash_group_key(sample.group, self.cfg.group_salt)
            if sample.group
            else None,
        )

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
            version_id, number, _ = self._write_version(
                coll.id,
                collection,
                vectors[keep],
                vec_ids[keep],
                spec,
                active.checkpoint_sha256,
                job,
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
        self.store.finish_job(job, state="succeeded", counts=_counts(result))
        return result

    def prune(self, collection: str, *, keep: int = 1) -> list[int]:
        """Delete the files of all but the active and the ``keep`` newest ready versions, and
        of failed or abandoned builds; returns the version numbers pruned."""
        coll = self.store.get_collection(collection)
        self._claim(coll.id, collection)
        versions = sorted(self.store.list_versions(coll.id), key=lambda v: v.version, reverse=True)
        kept_ready = 0
        pruned_ids, pruned_numbers = [], []
        for v in versions:
            if v.is_active:
                continue
            if v.state == "ready" and kept_ready < keep:
                kept_ready += 1
                continue
            if v.state == "pruned":
                continue
            shutil.rmtree(v.path, ignore_errors=True)
            pruned_ids.append(v.id)
            pruned_numbers.append(v.version)
        folder = collection_folder(self.cfg.data_dir, collection)
        if folder.is_dir():
            for leftover in folder.glob("v*.tmp-*"):  # builds that never finished
                shutil.rmtree(leftover, ignore_errors=True)
        if pruned_ids:
            self.store.mark_pruned(pruned_ids)
        return pruned_numbers


def _counts(result: BuildResult) -> dict[str, Any]:
    return {
        "version": result.version,
        "vectors": result.vector_count,
        "added": result.added,
        "updated": result.updated,
        "deleted": result.deleted,
        "skipped_known": result.skipped_known,
        "duplicates": result.duplicates,
        "conflicts": len(result.conflicts),
        "failed": len(result.failed),
    }
