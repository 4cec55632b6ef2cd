"""The manifest layout: labels.csv folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from archives.content import load_pixels
from archives.records import MISSING_IMAGE, OUTSIDE_ROOT, ArchiveError
from archives.registry import read_archive
from labels import Task
from support.archives import by_key, groups_in_several_splits, split_counts, write_csv, write_image


def test_manifest_multi_label_with_dicom_missing_and_unlabelled(manifest_fixture: Path) -> None:
    archive = read_archive(manifest_fixture)
    assert archive.layout == "manifest"
    assert archive.task is Task.MULTI_LABEL
    assert archive.codes == ("Effusion", "Mass")  # the NIH order, not sorted
    assert dict(archive.skipped) == {MISSING_IMAGE: 1, OUTSIDE_ROOT: 1}
    samples = by_key(archive)
    assert set(samples) == {"images/a.png", "images/b.png", "c.png", "scans/d.dcm", "images/e.jpg"}
    assert samples["images/a.png"].labels == ("Mass", "Effusion")
    assert samples["images/a.png"].group == "P1"
    assert samples["images/a.png"].metadata == {"age": "61"}  # no patient_name
    assert samples["c.png"].path == manifest_fixture / "images" / "c.png"
    assert not samples["c.png"].labelled
    assert samples["images/e.jpg"].labels == ()
    assert samples["images/e.jpg"].labelled
    assert split_counts(archive) == {"train": 2, "val": 2, "test": 1}
    dicom_pixels = load_pixels(samples["scans/d.dcm"])
    assert dicom_pixels.shape == (8, 8, 1)
    assert dicom_pixels.dtype == np.uint8
    labelled = [s for s in archive.samples if s.labelled]
    targets = archive.targets(labelled)
    assert targets.tolist() == [[1, 1], [0, 1], [1, 0], [0, 0]]
    with pytest.raises(ArchiveError, match="no label"):
        archive.targets(archive.samples)


def test_manifest_without_split_column_carves_by_group(tmp_path: Path) -> None:
    root = tmp_path / "m"
    rows = []
    for i in range(60):
        write_image(root / "images" / f"{i}.png", value=i)
        rows.append([f"{i}.png", "benign" if i % 3 else "malignant", f"patient{i // 3}"])
    write_csv(root / "labels.csv", ["file", "label", "patient_id"], rows)
    archive = read_archive(root)
    assert archive.task is Task.SINGLE_LABEL
    assert archive.codes == ("benign", "malignant")
    assert split_counts(archive) == {"train": 48, "val": 6, "test": 6}
    assert groups_in_several_splits(archive.samples) == set()
    assert [s.split for s in read_archive(root).samples] == [s.split for s in archive.samples]


def test_manifest_labels_csv_without_label_column(tmp_path: Path) -> None:
    write_image(tmp_path / "images" / "a.png")
    write_csv(tmp_path / "labels.csv", ["file", "diagnosis"], [["images/a.png", "NV"]])
    with pytest.raises(ArchiveError, match=r"no 'label' or 'labels' column \(columns: file, diag"):
        read_archive(tmp_path)


def test_manifest_unknown_split_and_duplicates_are_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_csv(tmp_path / "labels.csv", ["file", "label", "split"], [["a.png", "x", "holdout"]])
    with pytest.raises(ArchiveError, match=r"line 2: unknown split 'holdout'"):
        read_archive(tmp_path)
    write_csv(
        tmp_path / "labels.csv", ["file", "label"], [["a.png", "x"], ["b.png", "y"], ["a.png", "y"]]
    )
    with pytest.raises(ArchiveError, match=r"line 4: 'a.png' is listed again \(first on line 2\)"):
        read_archive(tmp_path)


def test_manifest_with_every_file_missing_is_refused(tmp_path: Path) -> None:
    write_csv(tmp_path / "labels.csv", ["file", "label"], [["a.png", "x"], ["b.png", "y"]])
    with pytest.raises(ArchiveError, match=r"no usable samples \(skipped image file missing: 2\)"):
        read_archive(tmp_path)
