"""Out-of-distribution check: is the query like the images this collection holds?

The score is the Mahalanobis distance of the query's [CLS] features (the encoder's
output before the embedding head) from the collection's feature distribution: a mean and
a Ledoit–Wolf shrunk covariance fitted on a sample of the indexed cases. The retrieval
embedding itself is a poor judge: metric learning pulls every image towards some class
cluster, so a chest X-ray can land close to dermoscopy cases; the richer features keep
what makes it different.

Calibration happens on the collection itself when a version is loaded. Up to
``reference_cases`` indexed images are decoded and encoded; two thirds fit the Gaussian,
and the threshold is the ``1 − false_alarm_rate`` quantile of the distances of the
held-out third — images that *are* in the collection but were not used for the fit, as a
new in-distribution query is. With the default rate of 2 %, about one genuine query in
fifty is flagged. The fitted model is cached per index version and checkpoint, and the
reference features per checkpoint and image content, so a new version of a collection
(a reindex) only encodes the images it has not seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.covariance import LedoitWolf

from files.atomic import atomic_writer

MIN_CASES = 12  # fewer reference images than this: no threshold (never flagged)
FIT_FRACTION = 2 / 3


@dataclass(frozen=True)
class OodModel:
    mean: np.ndarray  # (D,)
    precision: np.ndarray  # (D, D)
    threshold: float  # distances above it are flagged; +inf when not calibrated
    false_alarm_rate: float
    samples: int  # reference images used (fit + held out)
    median: float  # median held-out distance, for context

    def score(self, features: np.ndarray) -> float:
        """Mahalanobis distance of one feature vector."""
        if self.samples == 0:
            return 0.0
        d = np.asarray(features, dtype=np.float64) - self.mean
        # einsum's own loop, not BLAS: a BLAS call per query wakes its thread pool, whose
        # spinning threads then compete with the next forward for the cores
        squared = float(np.einsum("i,ij,j->", d, self.precision, d))
        return float(math.sqrt(max(squared, 0.0)))

    def is_flagged(self, score: float) -> bool:
        return score > self.threshold

    def save(self, path: Path) -> None:
        """Write the model atomically (replicas may share the cache folder)."""
        with atomic_writer(path, "wb") as handle:  # a handle: numpy adds no ".npz" to it
            np.savez(
                handle,
                mean=self.mean,
                precision=self.precision,
                scalars=np.asarray(
                    [self.threshold, self.false_alarm_rate, self.samples, self.median]
                ),
            )

    @classmethod
    def load(cls, path: Path) -> OodModel:
        with np.load(path, allow_pickle=False) as data:
            threshold, rate, samples, median = (float(v) for v in data["scalars"])
            return cls(data["mean"], data["precision"], threshold, rate, int(samples), median)


FEATURE_CACHE_LIMIT = 50_000  # reference features kept per checkpoint


def load_feature_cache(path: Path) -> dict[str, np.ndarray]:
    """Content hash → [CLS] features computed earlier with one checkpoint (empty if none)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return dict(zip(data["hashes"].tolist(), data["features"], strict=True))
    except Exception:  # a damaged cache is recomputed, never fatal
        path.unlink(missing_ok=True)
        return {}


def save_feature_cache(path: Path, features: dict[str, np.ndarray]) -> None:
    """Write the cache atomically, keeping at most :data:`FEATURE_CACHE_LIMIT` entries."""
    items = list(features.items())[-FEATURE_CACHE_LIMIT:]
    if not items:
        return
    with atomic_writer(path, "wb") as handle:  # a handle: numpy adds no ".npz" to it
        np.savez(
            handle,
            hashes=np.asarray([h for h, _ in items]),
            features=np.stack([f for _, f in items]).astype(np.float32),
        )


def uncalibrated(rate: float, dim: int = 0) -> OodModel:
    return OodModel(np.zeros(dim), np.zeros((dim, dim)), math.inf, rate, 0, math.nan)


def fit_ood(features: np.ndarray, *, false_alarm_rate: float, seed: int = 0) -> OodModel:
    """Fit on two thirds of ``features`` (N, D); threshold from the held-out third."""
    feats = np.asarray(features, dtype=np.float64)
    n = len(feats)
    if n < MIN_CASES:
        return uncalibrated(false_alarm_rate, feats.shape[1] if feats.ndim == 2 else 0)
    order = np.random.default_rng(seed).permutation(n)
    cut = round(n * FIT_FRACTION)
    fit, held = feats[order[:cut]], feats[order[cut:]]
    estimator = LedoitWolf().fit(fit)
    distances = np.sqrt(np.maximum(estimator.mahalanobis(held), 0.0))
    return OodModel(
        mean=estimator.location_,
        precision=estimator.precision_,
        threshold=float(np.quantile(distances, 1.0 - false_alarm_rate)),
        false_alarm_rate=false_alarm_rate,
        samples=n,
        median=float(np.median(distances)),
    )
