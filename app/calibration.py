"""Calibrating the out-of-distribution check of one index version on its own cases.

Up to ``MEDRET_OOD_REFERENCE_CASES`` indexed cases (a fixed random sample) are read back
from the archive and encoded by the version's model; :func:`app.ood.fit_ood` fits the
Gaussian and the threshold on their [CLS] features. Two caches under
``<data dir>/cache/ood`` make a reload cheap: the fitted model per version, checkpoint,
sample size and rate, and the reference features per checkpoint and image content (so a
reindex only encodes images it has not seen). A damaged cache is recomputed, never fatal.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from app.images import CaseImageError, case_pixels
from app.ood import OodModel, fit_ood, load_feature_cache, save_feature_cache, uncalibrated
from app.runner import ModelRunner
from app.settings import Settings
from imaging.decode import DecodeLimits
from indexer.search import CollectionIndex
from indexer.store import MetadataStore
from indexer.vectors.persistence import load_vectors

log = logging.getLogger(__name__)

REFERENCE_BATCH = 32  # reference images encoded per forward


def calibrated_ood(
    index: CollectionIndex,
    runner: ModelRunner,
    store: MetadataStore,
    settings: Settings,
    limits: DecodeLimits,
) -> OodModel:
    """The version's out-of-distribution model: cached, or fitted on its own cases."""
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
    chosen = rng.choice(len(ids), size=min(len(ids), settings.ood_reference_cases), replace=False)
    cases = store.get_cases([int(ids[i]) for i in np.sort(chosen)])
    features_path = cache.parent / f"features-{runner.sha256[:16]}.npz"
    known = load_feature_cache(features_path)
    todo, canvases = [], []
    for case in cases.values():
        if case.content_hash in known:
            continue
        try:
            canvases.append(runner.canvas(case_pixels(case, limits)))
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
