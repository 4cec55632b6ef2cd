"""Measures of an explanation map against a known box: where it peaks, how much of it
lies inside, and how it ranks its cells against another map (Spearman)."""

from __future__ import annotations

import numpy as np


def peak_inside(grid: np.ndarray, inside: np.ndarray) -> bool:
    """Whether the map's maximum lies inside; an all-zero map (no evidence) is a miss."""
    return bool(grid.max() > 0 and inside[np.unravel_index(int(np.argmax(grid)), grid.shape)])


def mass_inside(grid: np.ndarray, inside: np.ndarray) -> float:
    """Share of the map's sum on the inside cells; 0 for an all-zero map."""
    total = float(grid.sum())
    return float(grid[inside].sum()) / total if total > 0 else 0.0


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0 … n-1 of a flat array, tied values sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values), dtype=np.float64)
    out[order] = np.arange(len(values))
    _, group, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(group, weights=out)
    return (sums / counts)[group]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps over their cells; 0 when one map is constant."""
    ra, rb = ranks(a.ravel()), ranks(b.ravel())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denominator) if denominator else 0.0
