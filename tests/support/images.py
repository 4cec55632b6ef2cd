"""Raster images for tests: encoded in memory, or written as a folder of files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    """``image`` saved in ``image_format`` (PNG, JPEG, TIFF, …) with Pillow's ``options``."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def encode_array(pixels: np.ndarray, image_format: str, **options: object) -> bytes:
    """uint8 (H, W) or (H, W, C) ``pixels`` saved in ``image_format``."""
    return encode(Image.fromarray(pixels), image_format, **options)


def rng_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Uniform uint8 noise of ``shape`` (noise compresses badly: every byte matters)."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def write_image_folder(
    root: Path, count: int, seed: int, prefix: str = "img", shape: tuple[int, ...] = (24, 24, 3)
) -> Path:
    """``root/<prefix>_000.png`` …: ``count`` noise images from one generator of ``seed``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
            root / f"{prefix}_{i:03d}.png"
        )
    return root
