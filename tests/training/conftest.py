"""Tiny generated datasets for fast end-to-end training tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support.archives import NIH_HEADER

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


FINDINGS = ("Effusion", "Nodule")


@pytest.fixture(scope="session")
def tiny_nih(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A partially downloaded NIH ChestX-ray14 folder: 60 present grey images, one per
    patient, findings Effusion (stripes), Nodule (dots), both, or No Finding; plus label
    rows for images that are absent."""
    root = tmp_path_factory.mktemp("tiny_nih")
    rng = np.random.default_rng(3)
    (root / "images_001" / "images").mkdir(parents=True)
    rows, train_val, test = [], [], []
    combos = ["Effusion", "Nodule", "Effusion|Nodule", "No Finding"]
    for i in range(60):
        findings = combos[i % 4]
        img = synthetic_image("PLAIN", rng)[..., 0].astype(float)
        if "Effusion" in findings:
            img[:, (np.arange(48) // 8) % 2 == 0] -= 60
        if "Nodule" in findings:
            img[::6, ::6] += 80
        name = f"{i + 1:08d}_000.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
            root / "images_001" / "images" / name
        )
        rows.append([name, findings, 0, i + 1, 40, "F", "PA", 1024, 1024, 0.14, 0.14])
        (test if i >= 48 else train_val).append(name)
    for j in range(25):  # label rows whose images were never downloaded
        name = f"{900 + j:08d}_000.png"
        rows.append([name, "Mass", 0, 900 + j, 50, "M", "AP", 1024, 1024, 0.14, 0.14])
        train_val.append(name)
    with (root / "Data_Entry_2017.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(NIH_HEADER)
        writer.writerows(rows)
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MedMNIST-style pneumoniamnist.npz: 28×28 grey, 2 classes (plain vs dots)."""
    root = tmp_path_factory.mktemp("tiny_npz")
    rng = np.random.default_rng(4)
    arrays = {}
    for split, count in (("train", 40), ("val", 12), ("test", 12)):
        labels = np.arange(count) % 2
        images = np.stack(
            [synthetic_image("DOTS" if y else "PLAIN", rng, size=28)[..., 0] for y in labels]
        )
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez_compressed(root / "pneumoniamnist.npz", **arrays)
    return root
