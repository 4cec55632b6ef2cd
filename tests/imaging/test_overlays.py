"""The heat overlay: a relevance grid coloured over its canvas."""

from __future__ import annotations

import numpy as np
import pytest

from imaging.overlays import heat_overlay


def test_zero_cells_keep_the_image_and_relevant_cells_take_colour() -> None:
    canvas = np.full((32, 48, 3), 100, np.uint8)
    grid = np.zeros((2, 3), np.float32)
    grid[1, 2] = 1.0
    out = heat_overlay(canvas, grid, 0.5, cell=16)
    assert out.shape == canvas.shape
    assert out.dtype == np.uint8
    assert (out[:16] == 100).all()
    assert (out[16:, :32] == 100).all()
    assert (out[16:, 32:] != 100).any(axis=-1).all()
    assert out[20, 40, 0] > out[20, 40, 2]  # the hot end of the ramp is red-yellow


def test_pixels_outside_the_grid_are_left_alone() -> None:
    canvas = np.full((40, 40, 3), 7, np.uint8)
    out = heat_overlay(canvas, np.ones((2, 2), np.float32), 1.0, cell=16)
    assert (out[32:] == 7).all()
    assert (out[:, 32:] == 7).all()
    assert (out[:32, :32] != 7).any()


@pytest.mark.parametrize(
    ("canvas", "grid", "opacity"),
    [
        (np.zeros((32, 32), np.uint8), np.zeros((2, 2)), 0.5),
        (np.zeros((32, 32, 3), np.float32), np.zeros((2, 2)), 0.5),
        (np.zeros((32, 32, 3), np.uint8), np.zeros((3, 3)), 0.5),
        (np.zeros((32, 32, 3), np.uint8), np.zeros((2, 2)), 1.5),
    ],
)
def test_bad_arguments_are_refused(canvas: np.ndarray, grid: np.ndarray, opacity: float) -> None:
    with pytest.raises(ValueError, match=r"canvas|grid|opacity"):
        heat_overlay(canvas, grid, opacity, cell=16)
