"""What the service holds in memory: the active version of each collection it serves.

* :class:`CollectionRuntime` — one collection's active index version, the
  :class:`~app.runner.ModelRunner` of the checkpoint it was built with, and its
  out-of-distribution calibration (:mod:`app.calibration`). It is immutable: a request
  takes one at its start and uses it throughout, so it never mixes versions.
* :class:`CollectionRegistry` — the runtimes by name. A watcher compares the active
  versions in SQL with the loaded ones every few seconds; a new version is loaded in a
  worker thread while queries continue on the old one, then swapped in by replacing one
  dictionary entry. A version that fails to load leaves the old one serving. Runners are
  shared by the versions built with the same checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from app.calibration import calibrated_ood
from app.metrics import ServiceMetrics
from app.ood import OodModel
from app.runner import ModelRunner
from app.settings import Settings
from imaging.decode import DecodeLimits
from indexer.search import CollectionIndex
from indexer.store import CollectionInfo, MetadataStore
from model.checkpoint import load_checkpoint
from model.device import resolve_device

log = logging.getLogger(__name__)

RETIRE_AFTER_S = 60.0  # a replaced model stays usable this long for requests in flight


class NotReadyError(RuntimeError):
    """No collection (or not the one asked for) is loaded yet."""


class UnknownCollectionError(LookupError):
    """A collection name that this service does not serve."""


class AmbiguousCollectionError(ValueError):
    """Several collections are served and the query named none."""


@dataclass(frozen=True)
class CollectionRuntime:
    info: CollectionInfo
    index: CollectionIndex
    runner: ModelRunner
    ood: OodModel
    loaded_at: float

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> int:
        return self.index.version.version

    @property
    def size(self) -> int:
        return self.index.size

    def label_name(self, code: str) -> str:
        labels = self.runner.meta.labels
        try:
            return labels.names[labels.codes.index(code)]
        except ValueError:
            return code


class CollectionRegistry:
    def __init__(
        self,
        settings: Settings,
        store: MetadataStore,
        metrics: ServiceMetrics,
        limits: DecodeLimits | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.device = resolve_device(settings.device)
        self.limits = limits if limits is not None else settings.decode_limits()
        self._runtimes: dict[str, CollectionRuntime] = {}
        self._runners: dict[str, ModelRunner] = {}
        self._retired: list[tuple[float, ModelRunner]] = []
        self.problems: dict[str, str] = {}  # collection → why its newest version is not served
        self._failed: dict[str, int] = {}  # collection → version id that failed to load
        self._wanted: list[str] = list(settings.collections)
        self._sync_lock = threading.Lock()
        self._stopping = False
        self.started = False

    # ------------------------------------------------------------------ lookups

    @property
    def runtimes(self) -> dict[str, CollectionRuntime]:
        return self._runtimes

    def get(self, name: str | None) -> CollectionRuntime:
        runtimes = self._runtimes  # one snapshot for this lookup
        if name is None:
            if self.settings.default_collection:
                name = self.settings.default_collection
            elif len(runtimes) == 1:
                return next(iter(runtimes.values()))
            elif not runtimes:
                raise NotReadyError(self._not_ready_reason())
            else:
                raise AmbiguousCollectionError(
                    f"this service holds several collections ({', '.join(sorted(runtimes))}); "
                    "choose one with ?collection="
                )
        runtime = runtimes.get(name)
        if runtime is not None:
            return runtime
        if name in self._wanted:  # as of the last sync: no SQL on the event loop
            problem = self.problems.get(name)
            raise NotReadyError(
                f"collection {name!r} is not loaded yet" + (f": {problem}" if problem else "")
            )
        raise UnknownCollectionError(
            f"no collection named {name!r}; served: {', '.join(sorted(runtimes)) or 'none'}"
        )

    def collection_ids(self) -> dict[int, CollectionRuntime]:
        return {rt.info.id: rt for rt in self._runtimes.values()}

    def _not_ready_reason(self) -> str:
        if not self.started:
            return "the service is still loading its collections"
        if self.problems:
            return "no collection could be loaded: " + "; ".join(
                f"{k}: {v}" for k, v in sorted(self.problems.items())
            )
        return (
            "no collection has an index yet; build one with 'medret index' or POST /admin/reindex"
        )

    def wanted_names(self) -> list[str]:
        if self.settings.collections:
            return list(self.settings.collections)
        return [c.name for c in self.store.list_collections()]

    def is_ready(self) -> bool:
        wanted = self.wanted_names() if self.started else []
        loaded = self._runtimes
        return bool(loaded) and all(
            n in loaded or n not in self._with_active_version() for n in wanted
        )

    def _with_active_version(self) -> set[str]:
        return {c.name for c in self.store.list_collections() if self.store.active_version(c.id)}

    # ------------------------------------------------------------------ loading

    def sync(self) -> list[str]:
        """Load every wanted collection whose active version is not the loaded one (blocking).

        Returns the names that changed. Errors are kept in :attr:`problems`, never raised:
        the previous version (if any) keeps serving.
        """
        changed: list[str] = []
        with self._sync_lock:
            if self._stopping:
                return changed
            collections = {c.name: c for c in self.store.list_collections()}
            self._wanted = list(self.settings.collections) or list(collections)
            for name in self._wanted:
                info = collections.get(name)
                if info is None:
                    self.problems[name] = "no such collection in the database"
                    continue
                active = self.store.active_version(info.id)
                current = self._runtimes.get(name)
                if active is None:
                    if current is None:
                        self.problems[name] = "no active index version yet"
                    continue
                if current is not None and current.index.version.id == active.id:
                    continue
                if self._failed.get(name) == active.id:
                    continue  # tried; waits for another version (or a restart)
                try:
                    runtime = self._load(info)
                except Exception as exc:  # keep serving what we have
                    # the exception may name index or checkpoint files: the log has it
                    self.problems[name] = (
                        f"version {active.version} cannot be loaded ({type(exc).__name__}); "
                        "the server log says why"
                    )
                    self._failed[name] = active.id
                    self.metrics.reloads.labels(name, "failed").inc()
                    log.error(
                        "collection %s: cannot load version %d: %s", name, active.version, exc
                    )
                    continue
                self._runtimes = {**self._runtimes, name: runtime}  # the atomic swap
                self.problems.pop(name, None)
                self.metrics.index_size.labels(name).set(runtime.size)
                self.metrics.index_version.labels(name).set(runtime.version)
                if current is not None:
                    self.metrics.reloads.labels(name, "loaded").inc()
                changed.append(name)
                log.info(
                    "collection %s: serving version %d (%d cases, checkpoint %s…, "
                    "out-of-distribution threshold %.2f from %d images)",
                    name,
                    runtime.version,
                    runtime.size,
                    runtime.runner.sha256[:12],
                    runtime.ood.threshold,
                    runtime.ood.samples,
                )
            self._retire_unused()
            self.started = True
        return changed

    def _load(self, info: CollectionInfo) -> CollectionRuntime:
        index = CollectionIndex.load(self.store, info.name)
        runner = self._runner_for(index.version.checkpoint_sha256, info.checkpoint_path)
        ood = calibrated_ood(index, runner, self.store, self.settings, self.limits)
        return CollectionRuntime(index.collection, index, runner, ood, time.time())

    def _runner_for(self, sha256: str, checkpoint_path: str) -> ModelRunner:
        runner = self._runners.get(sha256)
        if runner is not None:
            return runner
        loaded = load_checkpoint(checkpoint_path, self.device)
        if loaded.sha256 != sha256:
            raise ValueError(
                f"the checkpoint file {checkpoint_path} (SHA-256 {loaded.sha256[:12]}…) is not "
                f"the one this index was built with ({sha256[:12]}…); refusing to mix models"
            )
        runner = ModelRunner(loaded, self.device, self.settings, self.metrics)
        self._runners[sha256] = runner
        return runner

    def _retire_unused(self) -> None:
        used = {rt.runner.sha256 for rt in self._runtimes.values()}
        for sha, runner in list(self._runners.items()):
            if sha not in used:
                del self._runners[sha]
                self._retired.append((time.monotonic() + RETIRE_AFTER_S, runner))

    async def close_retired(self, *, everything: bool = False) -> None:
        now = time.monotonic()
        due = [r for t, r in self._retired if everything or t <= now]
        self._retired = [(t, r) for t, r in self._retired if not (everything or t <= now)]
        for runner in due:
            await runner.aclose()

    async def watch(self) -> None:
        """Follow newly activated versions until cancelled."""
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await asyncio.to_thread(self.sync)
                await self.close_retired()
            except Exception:
                log.exception("looking for new index versions failed; will retry")

    def stop_syncing(self) -> None:
        """Wait for a sync in flight (blocking) and refuse later ones."""
        with self._sync_lock:
            self._stopping = True

    async def aclose(self) -> None:
        await asyncio.to_thread(self.stop_syncing)
        for runner in list(self._runners.values()):
            await runner.aclose()
        self._runners.clear()
        await self.close_retired(everything=True)
