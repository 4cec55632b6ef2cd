"""Builders of tiny dataset folders in each layout that :mod:`archives` reads, and small
questions to ask of the archive read back.

Plain functions taking a folder (pytest's ``tmp_path``) and returning the archive root, so
that tests of every package can reuse them; ``tests/archives/conftest.py`` wraps the common
ones as fixtures. Every image is a few pixels large and written with Pillow or pydicom.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from archives.records import Archive, Sample
from support.dicom import dicom_bytes

# The published label sets, written out here so that the tests check the readers' order.
ISIC_CODES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
# fmt: off
NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
)
# fmt: on
# The header of the NIH ChestX-ray14 Data_Entry_2017.csv.
NIH_HEADER = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
]

NIH_SIZE = (2500, 2048, 0.143, 0.143)  # OriginalImage[Width,Height], PixelSpacing[x,y]


def write_image(path: Path, value: int = 128, *, mode: str = "RGB", size: int = 8) -> Path:
    """A small image (format from the suffix) whose pixels vary with `value`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = (np.arange(size * size, dtype=np.int64).reshape(size, size) + value) % 256
    grey = ramp.astype(np.uint8)
    pixels = grey if mode == "L" else np.stack([grey, 255 - grey, grey // 2], axis=-1)
    Image.fromarray(pixels).save(path)
    return path


def write_dicom(path: Path, value: int = 100, size: int = 8) -> Path:
    """A small 12-bit monochrome Secondary Capture DICOM file whose pixels vary with `value`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(size * size, dtype=np.uint16).reshape(size, size) * 37 + value) % 4096
    path.write_bytes(dicom_bytes(pixels, Modality="OT"))
    return path


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def isic_ground_truth_rows(labels: Sequence[tuple[str, str]]) -> list[list[str]]:
    """(image id, code) → one-hot rows as the ISIC 2018 CSVs write them ("1.0"/"0.0")."""
    return [
        [image_id, *("1.0" if code == label else "0.0" for code in ISIC_CODES)]
        for image_id, label in labels
    ]


def make_isic2018(
    root: Path,
    *,
    validation: bool = False,
    metadata: bool = True,
    training_images: int = 20,
    missing_rows: int = 1,
) -> Path:
    """An ISIC 2018 Task 3 folder: `training_images` JPEGs whose ground truth cycles the
    seven classes, `missing_rows` extra ground-truth rows without an image, a LICENSE file;
    optionally a validation part (4 images) and HAM10000_metadata.csv with two images per
    lesion (``HAM_<i // 2>``)."""
    part = "ISIC2018_Task3_Training"
    labels = [(f"ISIC_{i:07d}", ISIC_CODES[i % len(ISIC_CODES)]) for i in range(training_images)]
    for index, (image_id, _) in enumerate(labels):
        write_image(root / f"{part}_Input" / f"{image_id}.jpg", value=index)
    (root / f"{part}_Input" / "LICENSE.txt").write_text("CC BY-NC 4.0\n")
    absent = [(f"ISIC_{9_000_000 + i:07d}", "NV") for i in range(missing_rows)]
    write_csv(
        root / f"{part}_GroundTruth" / f"{part}_GroundTruth.csv",
        ["image", *ISIC_CODES],
        isic_ground_truth_rows(labels + absent),
    )
    if validation:
        part = "ISIC2018_Task3_Validation"
        val_labels = [(f"ISIC_{8_000_000 + i:07d}", ISIC_CODES[i]) for i in range(4)]
        for index, (image_id, _) in enumerate(val_labels):
            write_image(root / f"{part}_Input" / f"{image_id}.jpg", value=200 + index)
        write_csv(
            root / f"{part}_GroundTruth" / f"{part}_GroundTruth.csv",
            ["image", *ISIC_CODES],
            isic_ground_truth_rows(val_labels),
        )
    if metadata:
        write_csv(
            root / "HAM10000_metadata.csv",
            ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"],
            [
                [f"HAM_{i // 2:07d}", image_id, code.lower(), "histo", 40 + i, "male", "back"]
                for i, (image_id, code) in enumerate(labels)
            ],
        )
    return root


# Rows of the NIH fixture: (image, findings, patient, present, list) with list one of
# "train_val", "test" or "" (in neither list).
NIH_ROWS: tuple[tuple[str, str, int, bool, str], ...] = (
    ("00000001_000.png", "Cardiomegaly", 1, True, "train_val"),
    ("00000001_001.png", "Cardiomegaly|Emphysema", 1, True, "train_val"),
    ("00000001_002.png", "Effusion", 1, False, "train_val"),
    ("00000002_000.png", "No Finding", 2, True, "train_val"),
    ("00000003_000.png", "Hernia", 3, True, "test"),
    ("00000003_001.png", "Effusion|Atelectasis|Hernia", 3, True, "test"),
    ("00000004_000.png", "No Finding", 4, False, "test"),
    ("00000005_000.png", "Pleural_Thickening|Mass", 5, True, "train_val"),
    ("00000006_000.png", "Nodule", 6, True, "train_val"),
    ("00000007_000.png", "Pneumonia|Infiltration", 7, True, "train_val"),
    ("00000008_000.png", "Edema", 8, True, ""),
    ("00000009_000.png", "Fibrosis", 9, False, "train_val"),
)


def make_chestxray14(root: Path) -> Path:
    """A partially downloaded NIH ChestX-ray14 folder (the rows are :data:`NIH_ROWS`).

    Present images are split over ``images_001/images/`` and ``images_002/images/``; three
    rows name absent images and one present image is in neither split list.
    """
    present = [row for row in NIH_ROWS if row[3]]
    for index, (name, *_rest) in enumerate(present):
        folder = "images_001" if index % 2 == 0 else "images_002"
        write_image(root / folder / "images" / name, value=index * 10, mode="L")
    write_csv(
        root / "Data_Entry_2017.csv",
        NIH_HEADER,
        [
            [name, findings, 0, patient, 50 + patient, "MF"[patient % 2], "PA", *NIH_SIZE]
            for name, findings, patient, _, _ in NIH_ROWS
        ],
    )
    for list_name in ("train_val", "test"):
        names = [row[0] for row in NIH_ROWS if row[4] == list_name]
        (root / f"{list_name}_list.txt").write_text("\n".join(names) + "\n")
    return root


def make_manifest(root: Path) -> Path:
    """A labels.csv manifest with multi-label rows, an unlabelled row, a DICOM file, a
    missing file, a path outside the folder and an identifying column.

    Columns: file,label,split,patient_id,age,patient_name. Present: 5 rows.
    """
    write_image(root / "images" / "a.png", value=1)
    write_image(root / "images" / "b.png", value=2, mode="L")
    write_image(root / "images" / "c.png", value=3)
    write_image(root / "images" / "e.jpg", value=4)
    write_dicom(root / "scans" / "d.dcm")
    write_image(root.parent / "outside.png", value=5)
    write_csv(
        root / "labels.csv",
        ["file", "label", "split", "patient_id", "age", "patient_name"],
        [
            ["images/a.png", "Mass|Effusion", "train", "P1", "61", "Doe^Jane"],
            ["images/b.png", "Mass", "training", "P1", "61", "Doe^Jane"],
            ["c.png", "", "valid", "P2", "", "Roe^Rick"],  # relative to images/, unlabelled
            ["scans/d.dcm", "Effusion", "test", "P3", "70", "Poe^Ed"],
            ["images/e.jpg", "No Finding", "validation", "P2", "45", "Roe^Rick"],
            ["images/missing.png", "Mass", "train", "P4", "50", "Loe^Lu"],
            ["../outside.png", "Mass", "train", "P5", "50", "Moe^Mo"],
        ],
    )
    return root


def make_grouped_manifest(root: Path, groups: Sequence[str] = ("P1", "P1", "P2", "P3")) -> Path:
    """A labels.csv manifest of one image per group entry, labelled A or B in turn, with a
    ``group`` (patient) column: indexing it stores hashed group keys."""
    rows = []
    for i, group in enumerate(groups):
        write_image(root / "images" / f"g{i}.png", value=17 + 29 * i)
        rows.append([f"images/g{i}.png", "AB"[i % 2], "train", group])
    write_csv(root / "labels.csv", ["file", "label", "split", "group"], rows)
    return root


def make_class_folders(
    root: Path, classes: Sequence[str] = ("benign", "malignant"), per_class: int = 10
) -> Path:
    """root/<class>/<n>.png, plus a stray image at the root (outside any class folder)."""
    for class_index, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i:03d}.png", value=class_index * 50 + i)
    write_image(root / "stray.png")
    return root


def make_split_class_folders(root: Path) -> Path:
    """root/<split>/<class>/*.png with splits train (3 per class), val and test (1 each)."""
    for split, count in (("train", 3), ("val", 1), ("test", 1)):
        for class_index, name in enumerate(("cat_a", "cat_b")):
            for i in range(count):
                write_image(root / split / name / f"{i}.png", value=class_index * 20 + i)
    return root


def make_medmnist(
    path: Path,
    *,
    counts: Sequence[int] = (6, 2, 3),
    columns: int = 1,
    rgb: bool = False,
    size: int = 5,
) -> Path:
    """A MedMNIST v2 style .npz at `path`; image i of a split has all pixels == i."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for split, count in zip(("train", "val", "test"), counts, strict=True):
        images = np.broadcast_to(
            np.arange(count, dtype=np.uint8)[:, None, None], (count, size, size)
        ).copy()
        if rgb:
            images = np.repeat(images[..., None], 3, axis=-1)
        if columns == 1:
            labels = (np.arange(count) % 3).reshape(count, 1).astype(np.uint8)
        else:
            labels = rng.integers(0, 2, size=(count, columns), dtype=np.uint8)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


def split_counts(archive: Archive) -> dict[str, int]:
    """Split → number of samples."""
    return dict(Counter(sample.split for sample in archive.samples))


def groups_in_several_splits(samples: Sequence[Sample]) -> set[str]:
    """Groups (or ungrouped samples' keys) found in more than one split."""
    splits_of: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        splits_of[sample.group or sample.key].add(sample.split)
    return {group for group, splits in splits_of.items() if len(splits) > 1}


def by_key(archive: Archive) -> dict[str, Sample]:
    """Key → sample."""
    return {sample.key: sample for sample in archive.samples}
