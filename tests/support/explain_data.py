"""Generated images whose class is decided by one small pattern at a known place.

Every canvas is grey noise (the same distribution for every class) with two squares of
2-px stripes at random places that do not touch: the *pattern*, and a *distractor*,
yellow (red and green at once), in every image whatever the class. Only the pattern
decides the class, and its box is returned, so a test can check that an explanation
points at it and not at the distractor or the noise. (Two textures of one colour —
horizontal against vertical stripes — are not learnt by a small ViT in the few hundred
steps a unit test can afford; the hue is.) Two tasks:

* ``pattern_images``: a red pattern (class 0) or a green one (class 1). A model may
  detect one colour only and explain the other class by its absence, and then its map
  of that class is right *not* to point at the pattern;
* ``three_class_images``: a red pattern (0), a blue one (1: the channel the distractor
  lacks) or none (2: the distractor alone), so that each pattern class needs evidence
  of its own. What the honesty test trains on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RED, GREEN = 0, 1
BLUE, NO_PATTERN = 1, 2  # the three-class task's classes 1 and 2 (RED stays 0)
_BRIGHT = 230
_CHANNELS = {RED: [0], GREEN: [1]}
_DISTRACTOR_CHANNELS = [0, 1]


@dataclass(frozen=True)
class PatternImages:
    canvases: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64: RED or GREEN; RED, BLUE or NO_PATTERN
    boxes: np.ndarray  # (N, 4) int: top, left, bottom, right of the pattern (exclusive end;
    # for NO_PATTERN, where it would be: noise there)
    distractors: np.ndarray  # (N, 4) int: the distractor's box, the same way


def _stripes(size: int) -> np.ndarray:
    """(size, size) bool mask of 2-px horizontal stripes (half the pixels)."""
    return np.indices((size, size))[0] // 2 % 2 == 0


def _place(rng: np.random.Generator, canvas: int, size: int) -> tuple[int, int]:
    top, left = rng.integers(0, canvas - size + 1, size=2)
    return int(top), int(left)


def _apart(a: tuple[int, int], b: tuple[int, int], size: int) -> bool:
    """Whether two ``size`` px squares at top-left corners ``a`` and ``b`` do not touch."""
    return a[0] + size <= b[0] or b[0] + size <= a[0] or a[1] + size <= b[1] or b[1] + size <= a[1]


def _paint(pixels: np.ndarray, corner: tuple[int, int], size: int, channels: list[int]) -> None:
    window = pixels[corner[0] : corner[0] + size, corner[1] : corner[1] + size]
    stripes = _stripes(size)
    for channel in channels:
        window[..., channel][stripes] = _BRIGHT


def pattern_images(count: int, seed: int, *, canvas: int = 64, pattern: int = 16) -> PatternImages:
    """``count`` canvases, classes alternating RED, GREEN, …, from one generator of ``seed``."""
    if canvas < 3 * pattern:  # else a central pattern leaves no room for the distractor
        raise ValueError(f"a {canvas} px canvas is too small for two {pattern} px squares")
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 140, size=(count, canvas, canvas, 3), dtype=np.uint8)
    labels = np.arange(count) % 2
    boxes = np.zeros((count, 4), dtype=np.int64)
    distractors = np.zeros((count, 4), dtype=np.int64)
    for i, label in enumerate(labels):
        corner = _place(rng, canvas, pattern)
        spot = _place(rng, canvas, pattern)
        while not _apart(corner, spot, pattern):
            spot = _place(rng, canvas, pattern)
        _paint(pixels[i], spot, pattern, _DISTRACTOR_CHANNELS)
        _paint(pixels[i], corner, pattern, _CHANNELS[int(label)])
        boxes[i] = (corner[0], corner[1], corner[0] + pattern, corner[1] + pattern)
        distractors[i] = (spot[0], spot[1], spot[0] + pattern, spot[1] + pattern)
    canvases = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return PatternImages(canvases, torch.from_numpy(labels).long(), boxes, distractors)


def three_class_images(
    count: int, seed: int, *, canvas: int = 64, pattern: int = 16
) -> PatternImages:
    """``count`` canvases of the three-class task, classes cycling RED, BLUE, NO_PATTERN.

    Built from ``pattern_images(count, seed)``: the same noise, distractor and places;
    each pattern square is refilled with fresh noise and, for RED and BLUE, painted again
    in its class's channel."""
    base = pattern_images(count, seed, canvas=canvas, pattern=pattern)
    rng = np.random.default_rng(seed + 100)
    labels = np.arange(count) % 3
    pixels = base.canvases.permute(0, 2, 3, 1).numpy().copy()
    for i, label in enumerate(labels):
        top, left, bottom, right = (int(v) for v in base.boxes[i])
        pixels[i, top:bottom, left:right] = rng.integers(
            0, 140, size=(bottom - top, right - left, 3), dtype=np.uint8
        )
        if label != NO_PATTERN:
            _paint(pixels[i], (top, left), pattern, [0] if label == RED else [2])
    canvases = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return PatternImages(canvases, torch.from_numpy(labels).long(), base.boxes, base.distractors)


def cells_touching(box: np.ndarray, grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """(rows, cols) bool: the grid cells (``patch_size`` px squares) that overlap ``box``.

    Cell (r, c) covers pixels [r*p, (r+1)*p) × [c*p, (c+1)*p); it overlaps the box
    [top, bottom) × [left, right) when the two half-open ranges intersect on both axes.
    """
    top, left, bottom, right = (int(v) for v in box)
    rows = np.arange(grid[0]) * patch_size
    cols = np.arange(grid[1]) * patch_size
    in_rows = (rows < bottom) & (rows + patch_size > top)
    in_cols = (cols < right) & (cols + patch_size > left)
    return in_rows[:, None] & in_cols[None, :]


def pattern_cells(
    images: PatternImages, index: int, grid: tuple[int, int], patch_size: int
) -> np.ndarray:
    """(rows, cols) bool: the cells where a map's peak on canvas ``index`` counts as on the
    pattern — those touching its box but not the distractor's (the two squares may lie
    edge to edge, and then one cell holds some of each)."""
    return cells_touching(images.boxes[index], grid, patch_size) & ~cells_touching(
        images.distractors[index], grid, patch_size
    )
