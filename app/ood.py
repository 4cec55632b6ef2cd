"""Out-of-distribution check: is the query like anything this collection holds?

The score is ``1 − mean cosine similarity of the query to its k nearest indexed cases``
(a k-nearest-neighbour distance in the model's embedding space). It is calibrated on the
collection itself when an index version is loaded: a sample of the indexed vectors is
searched leave-one-out (each against all the others), giving the scores of images that
*are* in distribution, and the threshold is their ``1 − false_alarm_rate`` quantile. A
query scoring above it is flagged — with the default rate of 1 %, about one in a hundred
genuine cases would be flagged, while an image of another kind (a chest X-ray sent to a
dermoscopy collection) lies far from every indexed case and scores well above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from indexer.vector_index import VectorIndex

CALIBRATION_SAMPLES = 2000


@dataclass(frozen=True)
class OodCalibration:
    k: int  # neighbours averaged
    threshold: float  # scores above it are flagged; +inf when too few cases to calibrate
    false_alarm_rate: float
    samples: int  # indexed cases the threshold was computed from
    median: float  # median in-collection score, for context

    def is_flagged(self, score: float) -> bool:
        return score > self.threshold


def ood_score(similarities: np.ndarray, k: int) -> float:
    """1 − mean of the ``k`` highest similarities (fewer if fewer are given; 1.0 if none)."""
    top = np.sort(np.asarray(similarities, dtype=np.float64).ravel())[::-1][:k]
    if top.size == 0:
        return 1.0
    return float(1.0 - top.mean())


def calibrate(
    index: VectorIndex,
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    k: int,
    false_alarm_rate: float,
    max_samples: int = CALIBRATION_SAMPLES,
    seed: int = 0,
) -> OodCalibration:
    """The threshold from leave-one-out scores of (a sample of) the indexed vectors."""
    n = len(ids)
    k_used = min(k, n - 1)
    if k_used < 1:
        return OodCalibration(k, math.inf, false_alarm_rate, 0, math.nan)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max_samples), replace=False))
    scores, found = index.search(np.ascontiguousarray(vectors[rows], np.float32), k_used + 1)
    in_distribution = []
    for row, row_scores, row_ids in zip(rows, scores, found, strict=True):
        others = row_scores[(row_ids != ids[row]) & (row_ids >= 0)][:k_used]
        in_distribution.append(ood_score(others, k_used))
    values = np.asarray(in_distribution)
    threshold = float(np.quantile(values, 1.0 - false_alarm_rate))
    return OodCalibration(
        k_used, threshold, false_alarm_rate, len(values), float(np.median(values))
    )
