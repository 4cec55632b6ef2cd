"""Small copies of the real medical images in ``../shared/data`` (the ``shared_data``
fixture of ``tests/conftest.py`` says where they are, or skips)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from support.archives import ISIC_CODES

HAM_CODES = ISIC_CODES  # HAM10000 uses the ISIC 2018 Task 3 classes
HAM_NAMES = {
    "MEL": "Melanoma",
    "NV": "Melanocytic nevus",
    "BCC": "Basal cell carcinoma",
    "AKIEC": "Actinic keratosis / intraepithelial carcinoma",
    "BKL": "Benign keratosis",
    "DF": "Dermatofibroma",
    "VASC": "Vascular lesion",
}


def ham_subset(shared: Path, dest: Path, per_class: int) -> Path:
    """A manifest archive with up to ``per_class`` images of each HAM10000 class."""
    source = shared / "ham10000"
    rows = list(csv.DictReader((source / "labels.csv").open()))
    taken: dict[str, int] = {}
    kept = []
    for row in rows:
        if taken.get(row["label"], 0) < per_class:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            kept.append(row)
    (dest / "images").mkdir(parents=True)  # the manifest names files as images/<name>
    for row in kept:
        shutil.copy(source / row["file"], dest / row["file"])
    with (dest / "labels.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return dest


def chest_subset(shared: Path, dest: Path, count: int) -> Path:
    """The NIH ChestX-ray14 layout with only the first ``count`` images present."""
    source = shared / "chestxray14"
    (dest / "images").mkdir(parents=True)
    for path in sorted((source / "images").iterdir())[:count]:
        shutil.copy(path, dest / "images" / path.name)
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        shutil.copy(source / name, dest / name)
    return dest
