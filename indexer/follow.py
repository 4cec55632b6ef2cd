"""``medret follow``: keep one collection up to date with one DICOMweb source.

A :class:`Follower` reads its feed (:mod:`indexer.feeds`) from the cursor stored in SQL,
drops the instances already indexed (by SOPInstanceUID) or already failed in this run,
and indexes the rest with :meth:`IndexBuilder.build` in ``add`` mode: at most
``batch_max`` instances per version, so a burst makes few versions. The cursor is stored
only after the version is active. A process killed anywhere therefore restarts from the
old cursor and reads some instances again; ADD skips those already indexed without
fetching them, so every instance is indexed exactly once (docs/indexer.md).

Instances that fail to decode are reported by the build (log and the job's errors) and
left behind: the cursor moves past them. A PACS that stops answering, or another job on
the collection, makes the follower wait (back-off up to ``backoff_max_s``) and try again
with the same cursor. SIGTERM or SIGINT ends it after the current batch, exit status 0.
Logs give counts, versions and seconds; never patient attributes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from archives.pacs import LabelTable, instances_archive, read_label_table
from dicomweb.client import shared_client
from dicomweb.errors import DicomwebError, PacsRefusedError
from dicomweb.refs import InstanceRef, parse_source
from indexer.builder import IndexBuilder, IndexBuildError, IndexerConfig, resolve_device
from indexer.feeds import Batch, Feed, feed_for
from indexer.store import MetadataStore, StoreError
from model.checkpoint import LoadedCheckpoint, load_checkpoint

log = logging.getLogger(__name__)

T = TypeVar("T")

SMALL_BATCH = 32  # up to this many instances decode in the follower itself (no workers)


@dataclass(frozen=True)
class FollowConfig:
    collection: str
    source: str
    checkpoint: Path | None = None  # None: the collection's own checkpoint
    labels: Path | None = None
    interval_s: float = 1.0  # wait between reads of a feed that had nothing more
    batch_max: int = 500
    once: bool = False  # read until the feed has nothing more, then exit
    full_every: int = 60  # QIDO-RS polling: list everything every this many polls
    backoff_max_s: float = 30.0


class Follower:
    """Follows one source into one collection (module doc); :meth:`run` until stopped."""

    def __init__(self, store: MetadataStore, indexer: IndexerConfig, cfg: FollowConfig) -> None:
        self.store = store
        self.cfg = cfg
        self.source = parse_source(cfg.source)
        self.key = self.source.text  # the cursor's name in SQL
        self.builder = IndexBuilder(store, indexer)
        self.small = IndexBuilder(store, dataclasses.replace(indexer, workers=0, progress=False))
        self.stopping = threading.Event()
        self.passed: set[str] = set()  # SOP UIDs built once in this run (failed ones too)
        self.checkpoint = self._checkpoint_path()
        self.table: LabelTable | None = read_label_table(cfg.labels) if cfg.labels else None
        self.loaded: LoadedCheckpoint | None = None
        self.versions = 0

    def _checkpoint_path(self) -> Path:
        if self.cfg.checkpoint is not None:
            return self.cfg.checkpoint
        known = {c.name: c for c in self.store.list_collections()}
        if self.cfg.collection not in known:
            raise IndexBuildError(
                f"collection {self.cfg.collection!r} does not exist yet; give --checkpoint"
            )
        return Path(known[self.cfg.collection].checkpoint_path)

    # ---------------------------------------------------------------- signals

    def stop(self, *_: object) -> None:
        """Ask the follower to end after the current batch."""
        if not self.stopping.is_set():
            log.info("follow %s: stopping after the current batch", self.cfg.collection)
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # ---------------------------------------------------------------- the loop

    def run(self) -> int:
        """Follow until stopped (or, with ``once``, until the feed has nothing more)."""
        self.loaded = loaded = load_checkpoint(
            self.checkpoint, resolve_device(self.builder.cfg.device)
        )
        if self._collection_id() is None:  # so that the cursor has a collection to belong to
            self.store.ensure_collection(
                self.cfg.collection,
                checkpoint_sha256=loaded.sha256,
                checkpoint_path=str(self.checkpoint.resolve()),
                task=loaded.meta.model.task.value,
                label_codes=list(loaded.meta.labels.codes),
                label_names=list(loaded.meta.labels.names),
            )
        feed = self._wait_for(
            lambda: feed_for(
                self.source, shared_client(self.source.root), full_every=self.cfg.full_every
            )
        )
        if feed is None:
            return 0
        log.info("follow %s: %s via %s", self.cfg.collection, self.source.root, feed.name)
        while not self.stopping.is_set():
            batch = self._wait_for(lambda: self._read(feed))
            if batch is None:
                break
            if not self._index(batch):
                break
            if batch.done:
                if self.cfg.once:
                    break
                self.stopping.wait(self.cfg.interval_s)
        log.info("follow %s: stopped after %d versions", self.cfg.collection, self.versions)
        return 0

    def _read(self, feed: Feed) -> Batch:
        return feed.read(self._cursor(), self.cfg.batch_max)

    def _cursor(self) -> str | None:
        coll = self._collection_id()
        return None if coll is None else self.store.get_cursor(coll, self.key)

    def _collection_id(self) -> int | None:
        known = {c.name: c.id for c in self.store.list_collections()}
        return known.get(self.cfg.collection)

    def _index(self, batch: Batch) -> bool:
        """Index the batch's new instances in versions of ``batch_max``, then store the
        cursor; ``False`` when a stop request interrupted it (the cursor stays)."""
        fresh = self._fresh(batch.refs)
        for start in range(0, len(fresh), self.cfg.batch_max):
            chunk = fresh[start : start + self.cfg.batch_max]
            if self._wait_for(functools.partial(self._build, chunk)) is None:
                return False
        coll = self._collection_id()
        if coll is not None:
            self.store.set_cursor(coll, self.key, batch.cursor)
        return True

    def _fresh(self, refs: Sequence[InstanceRef]) -> list[InstanceRef]:
        coll = self._collection_id()
        sops = [ref.sop for ref in refs]
        known = set(self.store.external_ids(coll, sops)) if coll is not None and sops else set()
        seen: set[str] = set()
        fresh = []
        for ref in refs:
            if ref.sop in known or ref.sop in self.passed or ref.sop in seen:
                continue
            seen.add(ref.sop)
            fresh.append(ref)
        return fresh

    def _build(self, chunk: Sequence[InstanceRef]) -> bool:
        started = time.perf_counter()
        builder = self.small if len(chunk) <= SMALL_BATCH else self.builder
        archive = instances_archive(self.key, chunk, self.table)
        result = builder.build(
            self.cfg.collection,
            self.checkpoint,
            self.key,
            mode="add",
            archive=archive,
            loaded=self.loaded,
        )
        self.versions += 1
        # indexed now, or failed, or the same content as a case already indexed: either way
        # not built again in this run (a restart tries the failed ones once more)
        self.passed.update(ref.sop for ref in chunk)
        log.info(
            "follow %s: batch of %d new instances -> version %d (%d added, %d skipped, "
            "%d failed) in %.2f s",
            self.cfg.collection,
            len(chunk),
            result.version,
            result.added,
            result.skipped_known,
            len(result.failed),
            time.perf_counter() - started,
        )
        return True

    def _wait_for(self, attempt: Callable[[], T]) -> T | None:
        """``attempt()``, retried with back-off while the PACS does not answer or another
        job holds the collection; ``None`` when a stop request came first."""
        delay = min(self.cfg.interval_s, self.cfg.backoff_max_s) or 0.5
        while not self.stopping.is_set():
            try:
                return attempt()
            except PacsRefusedError:
                raise
            except DicomwebError as exc:
                why = f"the PACS does not answer ({type(exc).__name__})"
            except IndexBuildError as exc:
                if not exc.retryable:
                    raise
                why = str(exc).split(";")[0]
            except StoreError:
                raise
            log.warning("follow %s: %s; retrying in %.1f s", self.cfg.collection, why, delay)
            self.stopping.wait(delay)
            delay = min(delay * 2, self.cfg.backoff_max_s)
        return None
