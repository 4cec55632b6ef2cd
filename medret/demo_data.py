"""The demo's synthetic image set: labelled classes that differ at different scales.

Each image is a textured "lesion" on a shaded background. Its class is the pair
(shape, texture):

* **shape** is coarse: one large disc, a ring, or a cluster of small blobs. It survives
  downscaling to a few pixels per side (the pyramid's coarse levels see it).
* **texture** is fine: the lesion is either smooth or hatched with stripes of a 4–5.5 px
  period (at 96 px) in any direction. Both have the same mean colour, so the difference
  vanishes once the image is averaged down by 2–4 (only the finest pyramid level sees it).

Six classes (3 shapes × 2 textures): some pairs of classes differ only coarsely, some only
finely, which is what a multi-scale model has to combine. Nuisance variation keeps it from
being trivial: position, size, aspect and angle of the lesion, skin and lesion colours,
brightness, a background gradient, the stripes' period, phase and direction, and pixel
noise. (Stripes that had to run horizontally or vertically were tried first: the CPU
recipe's tiny ViT does not learn the direction within a demo's training budget, while
hatched-versus-smooth it learns in a couple of minutes.)

Every image is a pure function of ``(seed, class, index)``; the set is written as the
manifest layout (:mod:`archives.layouts.manifest`): ``labels.csv`` with ``file,label,split,shape,
texture`` and PNG files under ``images/``, 70/15/15 train/val/test per class. A marker
file, written last, records the parameters, so an interrupted generation is never
mistaken for a complete one.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

SHAPES: tuple[str, ...] = ("disc", "ring", "cluster")
TEXTURES: tuple[str, ...] = ("smooth", "hatched")
CLASSES: tuple[str, ...] = tuple(f"{s}-{t}" for s in SHAPES for t in TEXTURES)
MARKER_FILE = "demo-dataset.json"
GENERATOR_VERSION = 1  # bump whenever the pictures change, so old sets are regenerated
SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
MIN_IMAGES_PER_CLASS = 8  # 6 classes × 6 training images ≥ the recipe's batch of 32


@dataclass(frozen=True)
class DemoDataSpec:
    """What a generated set is a function of (recorded in its marker file)."""

    images_per_class: int = 150
    image_size: int = 96  # the CPU recipe's input size: no resampling blurs the stripes
    seed: int = 0
    version: int = GENERATOR_VERSION

    def __post_init__(self) -> None:
        if self.images_per_class < MIN_IMAGES_PER_CLASS:
            raise ValueError(
                f"images_per_class must be at least {MIN_IMAGES_PER_CLASS} (the training "
                f"split must fill one batch of 32), got {self.images_per_class}"
            )
        if self.image_size < 64:
            raise ValueError(f"image_size must be at least 64 px, got {self.image_size}")


def split_of(index: int, count: int) -> str:
    """The split of a class's ``index``-th image: the first 70 % train, then 15 % val, test."""
    n_train = round(SPLIT_FRACTIONS[0][1] * count)
    n_val = max(1, round(SPLIT_FRACTIONS[1][1] * count))
    n_train = min(n_train, count - n_val - 1)
    if index < n_train:
        return "train"
    return "val" if index < n_train + n_val else "test"


# --------------------------------------------------------------------------- one image


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float, aspect: float, angle: float
) -> np.ndarray:
    """Signed distance (approximately, in px) outside an ellipse: < 0 inside."""
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = (-(x - cx) * s + (y - cy) * c) / aspect
    return np.sqrt(u * u + v * v) - r


def _soft(distance: np.ndarray) -> np.ndarray:
    """An anti-aliased mask from a signed distance (1 inside, 0 outside, ~1.5 px edge)."""
    return np.clip(0.5 - distance / 1.5, 0.0, 1.0)


def shape_mask(shape: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) float32 in [0, 1]: where the lesion is."""
    x, y = _grid(size)
    cx, cy = size * (0.5 + rng.uniform(-0.1, 0.1, 2))
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.75, 1.0)
    if shape == "disc":
        return _soft(_ellipse(x, y, cx, cy, size * rng.uniform(0.26, 0.34), aspect, angle))
    if shape == "ring":
        outer = size * rng.uniform(0.30, 0.37)
        inner = outer * rng.uniform(0.5, 0.62)
        d_out = _ellipse(x, y, cx, cy, outer, aspect, angle)
        d_in = _ellipse(x, y, cx, cy, inner, aspect, angle)
        return _soft(np.maximum(d_out, -d_in))
    if shape == "cluster":  # blobs large enough to show their texture
        mask = np.zeros((size, size), np.float32)
        count = int(rng.integers(3, 5))
        start = rng.uniform(0, 2 * np.pi)
        for k in range(count):
            theta = start + 2 * np.pi * k / count + rng.uniform(-0.3, 0.3)
            dist = size * rng.uniform(0.23, 0.29)
            bx, by = cx + dist * np.cos(theta), cy + dist * np.sin(theta)
            blob = _ellipse(x, y, bx, by, size * rng.uniform(0.13, 0.16), aspect, angle)
            mask = np.maximum(mask, _soft(blob))
        return mask
    raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def texture_pattern(texture: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) float32 in [-1, 1], mean 0: flat, or fine stripes in any direction."""
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; choose one of {', '.join(TEXTURES)}")
    x, y = _grid(size)
    normal = rng.uniform(0, np.pi)  # drawn for both textures: the same nuisance stream
    period = rng.uniform(4.0, 5.5) * size / 96
    phase = rng.uniform(0, 2 * np.pi)
    if texture == "smooth":
        return np.zeros((size, size), np.float32)
    wave = np.sin(2 * np.pi * (x * np.cos(normal) + y * np.sin(normal)) / period + phase)
    return wave.astype(np.float32)


def render(label: str, seed: int, index: int, size: int) -> np.ndarray:
    """The ``index``-th image of class ``label``: (size, size, 3) uint8, deterministic."""
    shape, _, texture = label.partition("-")
    rng = np.random.default_rng([seed, CLASSES.index(label), index])
    x, y = _grid(size)
    skin = np.array([0.85, 0.68, 0.58]) + rng.uniform(-0.08, 0.08, 3)
    gradient_angle = rng.uniform(0, 2 * np.pi)
    ramp = (x * np.cos(gradient_angle) + y * np.sin(gradient_angle)) / size
    image = skin[None, None, :] * (1.0 + 0.15 * (ramp - ramp.mean()))[..., None]

    mask = shape_mask(shape, rng, size)[..., None]
    stripes = texture_pattern(texture, rng, size)[..., None]
    lesion = np.array([0.45, 0.28, 0.2]) + rng.uniform(-0.07, 0.07, 3)
    contrast = rng.uniform(0.28, 0.34)
    textured = lesion[None, None, :] + contrast * stripes
    image = image * (1 - mask) + textured * mask

    image = image * rng.uniform(0.85, 1.15) + rng.normal(0, 0.025, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- the set


def read_marker(root: Path) -> DemoDataSpec | None:
    """The spec of a complete set at ``root``, or None (absent, partial or unreadable)."""
    try:
        data = json.loads((root / MARKER_FILE).read_text())
        return DemoDataSpec(**data["spec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_complete(root: Path, spec: DemoDataSpec) -> bool:
    return read_marker(root) == spec and (root / "labels.csv").is_file()


def generate(
    root: Path,
    spec: DemoDataSpec,
    *,
    on_progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the set described by ``spec`` into ``root`` (replacing what is there); returns
    ``root``. ``on_progress(done, total)`` is called after each image."""
    if root.exists():
        shutil.rmtree(root)
    images = root / "images"
    images.mkdir(parents=True)
    total = spec.images_per_class * len(CLASSES)
    rows = []
    done = 0
    for label in CLASSES:
        shape, _, texture = label.partition("-")
        for i in range(spec.images_per_class):
            name = f"{label}_{i:04d}.png"
            Image.fromarray(render(label, spec.seed, i, spec.image_size)).save(images / name)
            rows.append([name, label, split_of(i, spec.images_per_class), shape, texture])
            done += 1
            if on_progress is not None:
                on_progress(done, total)
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "split", "shape", "texture"])
        writer.writerows(rows)
    marker = {"spec": asdict(spec), "classes": list(CLASSES), "images": total}
    (root / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    log.info("wrote %d synthetic images (%d classes) to %s", total, len(CLASSES), root)
    return root
