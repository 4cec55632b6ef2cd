"""Values of any depth → uint8 for display: a linear window, and the robust window.

* **Linear window.** ``low`` → 0 and ``high`` → 255, clipped and rounded; NaN → 0.
* **Robust window.** The 0.5th and 99.5th percentiles of the finite values map to 0 and
  255 (linearly, clipped). If they coincide the minimum and maximum are used instead (so
  a sparse mask stays visible); a constant image becomes all zeros (black): there is no
  contrast to show and black is the letterbox colour of :mod:`imaging.preprocessing`.
  NaN becomes 0. Percentiles of very large images are taken on a regular subsample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Percentiles of the robust window, and the sample size above which they are estimated
# from a regular subsample (exact percentiles of 10^8 pixels take seconds).
ROBUST_WINDOW_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLE_SIZE = 1 << 22


def linear_window_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map `low` → 0 and `high` → 255 linearly, clip, round; NaN → 0. Needs high > low."""
    work = np.asarray(values, dtype=_float_dtype_for(values))
    scaled = (work - low) * (255.0 / (high - low))
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    return np.rint(scaled).astype(np.uint8)


def robust_window_to_uint8(values: np.ndarray) -> np.ndarray:
    """The 0.5/99.5 percentile window (min/max if those coincide; constant → zeros)."""
    low, high = robust_window_bounds(values)
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    return linear_window_to_uint8(values, low, high)


def robust_window_bounds(values: np.ndarray) -> tuple[float, float]:
    """Robust (low, high) of the finite values of `values`; (0, 0) when there are none."""
    sample = _percentile_sample(values)
    if sample.size == 0:
        return 0.0, 0.0
    low, high = (float(v) for v in np.percentile(sample, ROBUST_WINDOW_PERCENTILES))
    if high > low:
        return low, high
    return float(sample.min()), float(sample.max())


def _percentile_sample(values: np.ndarray) -> np.ndarray:
    flat = values.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLE_SIZE:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLE_SIZE]
    work = flat.astype(_float_dtype_for(values))
    return work[np.isfinite(work)]


def _float_dtype_for(values: np.ndarray) -> np.dtype[np.floating[Any]]:
    """float32 is exact for up to 16-bit data; wider data needs float64."""
    return np.dtype(np.float32) if values.dtype.itemsize <= 2 else np.dtype(np.float64)
