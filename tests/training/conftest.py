"""Tiny generated datasets for fast end-to-end training tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ("DOTS", "STRIPES", "PLAIN")


def synthetic_image(label: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A class told apart by texture: fine dots, coarse stripes, or a smooth blob."""
    img = rng.normal(110, 12, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    if label == "DOTS":
        img[(yy % 6 < 2) & (xx % 6 < 2)] += 90
    elif label == "STRIPES":
        img[(xx // 8) % 2 == 0] -= 70
    else:
        img += 60 * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (size * 3))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_manifest(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """``root/labels.csv`` + ``root/images/*.png`` in the generic manifest layout."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, count in per_class.items():
        for label in CLASSES:
            for i in range(count):
                name = f"{split}_{label.lower()}_{i:03d}.png"
                Image.fromarray(synthetic_image(label, rng)).save(root / "images" / name)
                rows.append({"file": name, "label": label, "lesion_id": name, "split": split})
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label", "lesion_id", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 texture classes; 16 train, 6 val, 6 test images each (48×48 PNG)."""
    return write_manifest(
        tmp_path_factory.mktemp("tiny_manifest"), {"train": 16, "val": 6, "test": 6}
    )
