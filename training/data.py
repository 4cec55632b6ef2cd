"""The labelled images of a run: an archive's splits, cached once as letterboxed canvases.

Rank 0 decodes every image into the pixel cache (:mod:`training.pixel_cache`); the other
ranks wait at a barrier, then only hash their images and look the rows up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from archives.records import Archive, Sample
from archives.registry import read_archive
from training.config import TrainConfig
from training.distributed import SINGLE_PROCESS, DistEnv, barrier
from training.errors import TrainingError
from training.pixel_cache import CacheReport, PixelCache

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    samples: list[Sample]
    rows: np.ndarray  # pixel-cache row per sample
    targets: np.ndarray  # (N,) int64 or (N, C) float32


@dataclass
class PreparedData:
    archive: Archive
    cache: PixelCache
    splits: dict[str, SplitData]
    report: CacheReport
    dropped_unlabelled: int


def prepare_data(
    archive: Archive,
    size: tuple[int, int],
    cache_dir: str | Path,
    *,
    splits: tuple[str, ...],
    workers: int,
    env: DistEnv = SINGLE_PROCESS,
    progress: bool = True,
) -> PreparedData:
    """Cache the labelled samples of ``splits`` (rank 0 decodes; the others only read)."""
    wanted = [s for s in archive.samples if s.split in splits]
    labelled = [s for s in wanted if s.labelled]
    cache = PixelCache(cache_dir, size)
    if env.is_main:
        rows, report = cache.build(labelled, workers=workers, progress=progress)
    barrier(env)
    if not env.is_main:  # rank 0 has built the cache: hash and look rows up, never write
        cache = PixelCache(cache_dir, size)
        rows, report = cache.lookup(labelled, workers=workers)
        if labelled and not (rows >= 0).any():
            raise TrainingError(
                f"rank {env.rank}: none of the {len(labelled)} images is in the pixel cache "
                f"{cache.directory} that rank 0 built ({report.summary()}); the cache "
                "directory must be on a file system that every rank sees"
            )
    keep = rows >= 0
    kept = [s for s, k in zip(labelled, keep, strict=True) if k]
    kept_rows = rows[keep]
    out: dict[str, SplitData] = {}
    for split in splits:
        idx = [i for i, s in enumerate(kept) if s.split == split]
        samples = [kept[i] for i in idx]
        targets = archive.targets(samples) if samples else np.zeros(0, dtype=np.int64)
        out[split] = SplitData(samples, kept_rows[idx], targets)
    return PreparedData(archive, cache, out, report, len(wanted) - len(labelled))


def training_data(cfg: TrainConfig, env: DistEnv, *, progress: bool) -> PreparedData:
    """The config's dataset, its train and val splits cached; refuses splits too small to run."""
    if not cfg.data.path:
        raise TrainingError("no dataset given: set data.path (or --data)")
    archive = read_archive(cfg.data.path, cfg.data.layout, val_fraction=cfg.data.val_fraction)
    if env.is_main:
        log.info("%s", archive.summary())
    size = (cfg.model.image_size, cfg.model.image_size)
    data = prepare_data(
        archive,
        size,
        cfg.data.cache_dir,
        splits=("train", "val"),
        workers=cfg.data.workers,
        env=env,
        progress=progress,
    )
    train = data.splits["train"]
    if len(train.samples) < cfg.batch_size:
        raise TrainingError(
            f"the training split has {len(train.samples)} usable images, fewer than one "
            f"batch of {cfg.batch_size}"
        )
    if not len(data.splits["val"].samples):
        raise TrainingError("the validation split is empty: nothing to select on")
    return data
