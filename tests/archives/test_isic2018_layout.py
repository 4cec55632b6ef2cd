"""The isic2018 layout: tiny generated ISIC 2018 Task 3 folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from archives.content import load_pixels
from archives.records import MISSING_IMAGE, NOT_IN_GROUND_TRUTH, ArchiveError
from archives.registry import read_archive
from labels import Task
from support.archives import (
    ISIC_CODES,
    by_key,
    groups_in_several_splits,
    make_isic2018,
    split_counts,
    write_image,
)


def test_isic2018_carves_val_by_lesion_and_joins_metadata(isic_fixture: Path) -> None:
    archive = read_archive(isic_fixture, val_fraction=0.2)
    assert archive.layout == "isic2018"
    assert archive.task is Task.SINGLE_LABEL
    assert archive.codes == ISIC_CODES
    assert archive.names[3] == "Actinic keratosis / intraepithelial carcinoma (Bowen's)"
    assert len(archive.samples) == 20
    assert dict(archive.skipped) == {MISSING_IMAGE: 1}  # the LICENSE file is not an image
    assert split_counts(archive) == {"train": 16, "val": 4}  # 2 lesions of 2 images
    assert groups_in_several_splits(archive.samples) == set()
    sample = by_key(archive)["ISIC_0000003"]
    assert sample.labels == ("AKIEC",)
    assert sample.group == "HAM_0000001"
    assert sample.metadata["age"] == "43"
    assert sample.metadata["localization"] == "back"
    assert sample.path == isic_fixture / "ISIC2018_Task3_Training_Input" / "ISIC_0000003.jpg"
    assert load_pixels(sample).shape == (8, 8, 3)


def test_isic2018_carving_is_deterministic_and_follows_the_seed(tmp_path: Path) -> None:
    root = make_isic2018(tmp_path / "isic", training_images=60)

    def val_keys(seed: int) -> set[str]:
        return {s.key for s in read_archive(root, seed=seed).split("val")}

    assert val_keys(0) == val_keys(0)
    assert len(val_keys(0)) == 6
    assert any(val_keys(seed) != val_keys(0) for seed in (1, 2, 3))


def test_isic2018_uses_the_validation_folder(tmp_path: Path) -> None:
    root = make_isic2018(tmp_path / "isic", validation=True, metadata=False)
    archive = read_archive(root)
    assert split_counts(archive) == {"train": 20, "val": 4}
    assert {s.labels[0] for s in archive.split("val")} == set(ISIC_CODES[:4])
    assert all(sample.group is None for sample in archive.samples)


def test_isic2018_input_without_ground_truth_is_unlabelled(tmp_path: Path) -> None:
    root = make_isic2018(tmp_path / "isic", missing_rows=0)
    write_image(root / "ISIC2018_Task3_Test_Input" / "ISIC_0100000.jpg")
    write_image(root / "ISIC2018_Task3_Training_Input" / "ISIC_0999999.jpg")  # no GT row
    archive = read_archive(root)
    (test_sample,) = archive.split("test")
    assert not test_sample.labelled
    assert archive.skipped == {NOT_IN_GROUND_TRUTH: 1}
    with pytest.raises(ArchiveError, match="no label"):
        archive.targets([test_sample])


def test_isic2018_row_with_two_classes_is_refused(tmp_path: Path) -> None:
    root = make_isic2018(tmp_path / "isic")
    gt = root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    lines[3] = "ISIC_0000002,1.0,0.0,1.0,0.0,0.0,0.0,0.0"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(ArchiveError, match=r"line 4: image 'ISIC_0000002' must have exactly one"):
        read_archive(root)
