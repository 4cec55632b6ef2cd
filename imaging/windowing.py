"""Values of any depth → uint8 for display: a linear window, and the robust window.

* **Linear window.** ``low`` → 0 and ``high`` → 255, clipped and rounded; NaN → 0.
* **Robust window.** The 0.5th and 99.5th percentiles of the finite values map to 0 and
  255 (linearly, clipped). If they coincide the minimum and maximum are used instead (so
  a sparse mask stays visible); a constant image becomes all zeros (black): there is no
  contrast to show and black is the letterbox colour of :mod:`imaging.preprocessing`.
  NaN becomes 0. Percentiles of very large images are taken on a regular subsample.
* **Blocks.** Every per-pixel step runs over blocks of rows (:func:`map_row_blocks`) into
  one preallocated output, so the float temporaries of a 64-megapixel image are a few MB,
  not several copies of the image: the decoded image is held once in its own dtype and
  once as uint8, never widened whole to float.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Percentiles of the robust window, and the sample size above which they are estimated
# from a regular subsample (exact percentiles of 10^8 pixels take seconds).
ROBUST_WINDOW_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLE_SIZE = 1 << 22
# Elements per block of :func:`map_row_blocks`: float64 temporaries of 8 MB each.
BLOCK_ELEMENTS = 1 << 20


def map_row_blocks(
    values: np.ndarray,
    step: Callable[[np.ndarray], np.ndarray],
    *,
    out_dtype: type[np.generic] = np.uint8,
) -> np.ndarray:
    """``step`` applied to blocks of rows of `values`, written into one output array.

    ``step`` maps a block (rows × …) to an array of the same leading shape; the result has
    the shape ``step`` returns for the whole array and dtype `out_dtype`. A step that is
    elementwise gives exactly what ``step(values)`` would, with temporaries bounded by
    :data:`BLOCK_ELEMENTS` instead of the image's size.
    """
    if values.ndim == 0 or values.shape[0] == 0:
        return np.asarray(step(values), dtype=out_dtype)
    row_elements = max(1, values[:1].size)
    rows_per_block = max(1, BLOCK_ELEMENTS // row_elements)
    first = np.asarray(step(values[:rows_per_block]), dtype=out_dtype)
    out = np.empty((values.shape[0], *first.shape[1:]), dtype=out_dtype)
    out[: first.shape[0]] = first
    for start in range(rows_per_block, values.shape[0], rows_per_block):
        out[start : start + rows_per_block] = step(values[start : start + rows_per_block])
    return out


def linear_window_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map `low` → 0 and `high` → 255 linearly, clip, round; NaN → 0. Needs high > low."""
    return map_row_blocks(values, lambda block: linear_window_block(block, low, high))


def linear_window_block(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """:func:`linear_window_to_uint8` of one block, in one float temporary."""
    scaled = np.array(values, dtype=_float_dtype_for(values))
    scaled -= low
    scaled *= 255.0 / (high - low)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.rint(scaled, out=scaled)
    return scaled.astype(np.uint8)


def robust_window_to_uint8(values: np.ndarray) -> np.ndarray:
    """The 0.5/99.5 percentile window (min/max if those coincide; constant → zeros)."""
    low, high = robust_window_bounds(values)
    if not high > low:
        return np.zeros(values.shape, dtype=np.uint8)
    return linear_window_to_uint8(values, low, high)


def robust_window_bounds(values: np.ndarray) -> tuple[float, float]:
    """Robust (low, high) of the finite values of `values`; (0, 0) when there are none."""
    return robust_bounds_of_sample(percentile_sample(values))


def robust_bounds_of_sample(sample: np.ndarray) -> tuple[float, float]:
    """Robust (low, high) of a :func:`percentile_sample` (after any per-pixel transform)."""
    sample = np.asarray(sample)
    sample = sample.astype(_float_dtype_for(sample))
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 0.0
    low, high = (float(v) for v in np.percentile(sample, ROBUST_WINDOW_PERCENTILES))
    if high > low:
        return low, high
    return float(sample.min()), float(sample.max())


def percentile_sample(values: np.ndarray) -> np.ndarray:
    """The values the robust window is estimated from: all, or a regular subsample (a copy
    of at most :data:`_PERCENTILE_SAMPLE_SIZE` values in their own dtype)."""
    flat = values.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLE_SIZE:
        flat = flat[:: flat.size // _PERCENTILE_SAMPLE_SIZE]
    return np.array(flat)


def _float_dtype_for(values: np.ndarray) -> np.dtype[np.floating[Any]]:
    """float32 is exact for up to 16-bit data; wider data needs float64."""
    return np.dtype(np.float32) if values.dtype.itemsize <= 2 else np.dtype(np.float64)
