"""What the service holds in memory: loaded models and the active version of each collection.

* :class:`ModelRunner` — one checkpoint on the device, behind a :class:`MicroBatcher`.
  Its input is the letterboxed uint8 canvas that :func:`model.preprocessing.fit_to_canvas`
  makes (exactly as training and the indexer), normalised on the device.
* :class:`CollectionRuntime` — one collection's active index version, the runner of the
  checkpoint it was built with, and its out-of-distribution calibration. It is immutable:
  a request takes one at its start and uses it throughout, so it never mixes versions.
* :class:`CollectionRegistry` — the runtimes by name. A watcher compares the active
  versions in SQL with the loaded ones every few seconds; a new version is loaded in a
  worker thread while queries continue on the old one, then swapped in by replacing one
  dictionary entry. A version that fails to load leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from app.batching import MicroBatcher
from app.images import CaseImageError, case_pixels
from app.metrics import ServiceMetrics
from app.ood import (
    OodModel,
    fit_ood,
    load_feature_cache,
    save_feature_cache,
    uncalibrated,
)
from app.settings import Settings
from indexer.search import CollectionIndex
from indexer.store import CollectionInfo, MetadataStore
from indexer.vector_index import load_vectors
from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.config import Task
from model.decoding import DecodeLimits
from model.device import autocast, resolve_device
from model.preprocessing import fit_to_canvas, normalise
from model.vit import probabilities

log = logging.getLogger(__name__)

RETIRE_AFTER_S = 60.0
REFERENCE_BATCH = 32  # a replaced model stays usable this long for requests in flight


class NotReadyError(RuntimeError):
    """No collection (or not the one asked for) is loaded yet."""


class UnknownCollectionError(LookupError):
    """A collection name that this service does not serve."""


class AmbiguousCollectionError(ValueError):
    """Several collections are served and the query named none."""


@dataclass(frozen=True)
class Prediction:
    embedding: np.ndarray  # (E,) float32, unit norm
    probabilities: np.ndarray  # (C,) float32
    features: np.ndarray  # (D,) float32: the [CLS] features the embedding head reads


class ModelRunner:
    """A loaded checkpoint and the micro-batcher in front of it."""

    def __init__(
        self,
        loaded: LoadedCheckpoint,
        device: torch.device,
        settings: Settings,
        metrics: ServiceMetrics,
    ) -> None:
        self.loaded = loaded
        self.device = device
        self.meta = loaded.meta
        self.sha256 = loaded.sha256
        self.task = loaded.meta.model.task
        self.image_size = loaded.meta.preprocessing.image_size
        self.batcher: MicroBatcher[torch.Tensor, Prediction] = MicroBatcher(
            self.forward,
            max_batch=settings.batch_max,
            max_wait_s=settings.batch_wait_ms / 1000,
            name=loaded.sha256[:8],
            on_batch=metrics.batch_size.observe,
        )

    def canvas(self, pixels: np.ndarray) -> torch.Tensor:
        """Decoded pixels → the letterboxed uint8 (3, H, W) model canvas (CPU)."""
        return fit_to_canvas(pixels, self.image_size)

    @torch.inference_mode()
    def forward(self, canvases: Sequence[torch.Tensor]) -> list[Prediction]:
        """Embeddings and class probabilities of a batch of canvases (blocking)."""
        batch = torch.stack(list(canvases)).to(self.device, non_blocking=True)
        x = normalise(batch, self.meta.preprocessing)
        with autocast(self.device, bf16=True):
            features, out = self.loaded.model.forward_with_features(x)  # (B, D), (B, E)/(B, C)
        embeddings = torch.nn.functional.normalize(out.embedding.float(), dim=-1)
        probs = probabilities(out.logits, self.task)
        emb_np = embeddings.cpu().numpy().astype(np.float32, copy=False)
        prob_np = probs.float().cpu().numpy()
        feat_np = features.float().cpu().numpy()
        return [Prediction(e, p, f) for e, p, f in zip(emb_np, prob_np, feat_np, strict=True)]

    async def predict(self, canvas: torch.Tensor) -> Prediction:
        return await self.batcher.submit(canvas)

    async def aclose(self) -> None:
        await self.batcher.aclose()


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

    @property
    def multi_label(self) -> bool:
        return self.runner.task is Task.MULTI_LABEL

    def label_name(self, code: str) -> str:
        labels = self.runner.meta.labels
        try:
            return labels.names[labels.codes.index(code)]
        except ValueError:
            return code


class CollectionRegistry:
    def __init__(self, settings: Settings, store: MetadataStore, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.device = resolve_device(settings.device)
        self.limits = DecodeLimits(
            max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels
        )
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
                    self.problems[name] = f"version {active.version}: {exc}"
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
        ood = self._ood_model(index, runner)
        return CollectionRuntime(index.collection, index, runner, ood, time.time())

    def _ood_model(self, index: CollectionIndex, runner: ModelRunner) -> OodModel:
        """The version's out-of-distribution model: cached, or fitted on its own cases."""
        settings = self.settings
        rate = settings.ood_false_alarm_rate
        if settings.ood_reference_cases == 0:
            return uncalibrated(rate)
        version = index.version
        cache = (
            settings.resolved_data_dir
            / "cache"
            / "ood"
            / f"v{version.id}-{runner.sha256[:16]}-{settings.ood_reference_cases}-{rate}.npz"
        )
        if cache.is_file():
            try:
                return OodModel.load(cache)
            except Exception:  # a damaged cache is recomputed, never fatal
                log.warning("ignoring an unreadable out-of-distribution cache %s", cache)
                cache.unlink(missing_ok=True)
        started = time.perf_counter()
        _, ids = load_vectors(Path(version.path), mmap=True)
        rng = np.random.default_rng(0)
        chosen = rng.choice(
            len(ids), size=min(len(ids), settings.ood_reference_cases), replace=False
        )
        cases = self.store.get_cases([int(ids[i]) for i in np.sort(chosen)])
        features_path = cache.parent / f"features-{runner.sha256[:16]}.npz"
        known = load_feature_cache(features_path)
        todo, canvases = [], []
        for case in cases.values():
            if case.content_hash in known:
                continue
            try:
                canvases.append(runner.canvas(case_pixels(case, self.limits)))
                todo.append(case.content_hash)
            except CaseImageError as exc:
                log.debug("out-of-distribution reference: skipping case %d: %s", case.id, exc)
        computed = [
            p.features
            for start in range(0, len(canvases), REFERENCE_BATCH)
            for p in runner.forward(canvases[start : start + REFERENCE_BATCH])
        ]
        known.update(zip(todo, computed, strict=True))
        features = [known[c.content_hash] for c in cases.values() if c.content_hash in known]
        if computed:
            try:
                save_feature_cache(features_path, known)
            except OSError as exc:
                log.warning("cannot cache reference features at %s: %s", features_path, exc)
        model = fit_ood(np.stack(features) if features else np.zeros((0, 0)), false_alarm_rate=rate)
        log.info(
            "collection %s v%d: out-of-distribution threshold %.2f from %d indexed images "
            "(%d encoded now, %.1f s)",
            index.collection.name,
            version.version,
            model.threshold,
            model.samples,
            len(computed),
            time.perf_counter() - started,
        )
        try:
            model.save(cache)
        except OSError as exc:
            log.warning("cannot cache the out-of-distribution model at %s: %s", cache, exc)
        return model

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
