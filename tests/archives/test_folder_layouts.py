"""The class_folders and image_folder layouts: images sorted into folders, or not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from archives.records import OUTSIDE_CLASS_FOLDER
from archives.registry import detect_layout, read_archive
from labels import Task
from support.archives import (
    by_key,
    make_class_folders,
    make_split_class_folders,
    split_counts,
    write_dicom,
    write_image,
)


def test_class_folders_without_split_folders(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "cf")
    assert detect_layout(root) == "class_folders"
    archive = read_archive(root)
    assert archive.codes == ("benign", "malignant")
    assert archive.task is Task.SINGLE_LABEL
    assert split_counts(archive) == {"train": 16, "val": 2, "test": 2}
    assert archive.skipped == {OUTSIDE_CLASS_FOLDER: 1}
    assert by_key(archive)["malignant/003.png"].labels == ("malignant",)
    assert archive.targets(archive.split("train")).dtype == np.int64


def test_class_folders_with_split_folders(tmp_path: Path) -> None:
    root = make_split_class_folders(tmp_path / "cf")
    archive = read_archive(root)
    assert archive.layout == "class_folders"
    assert split_counts(archive) == {"train": 6, "val": 2, "test": 2}
    assert by_key(archive)["val/cat_b/0.png"].labels == ("cat_b",)


def test_image_folder_is_unlabelled_and_skips_hidden_files(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    write_image(root / "a.png")
    write_dicom(root / "2022" / "deeper" / "b.DCM")
    write_image(root / ".thumbs" / "c.png")
    (root / "notes.txt").write_text("not an image")
    assert detect_layout(root) == "image_folder"
    archive = read_archive(root)
    assert [s.key for s in archive.samples] == ["2022/deeper/b.DCM", "a.png"]
    assert all(not s.labelled and s.split == "" for s in archive.samples)
    assert archive.split("") == list(archive.samples)
    # sub-folders of images look like classes: the indexer asks for image_folder explicitly
    assert len(read_archive(make_class_folders(tmp_path / "cf"), "image_folder").samples) == 21
