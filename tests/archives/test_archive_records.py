"""What an archive says about itself, and the warning about splits that leak a group."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from archives.registry import LAYOUTS, read_archive
from support.archives import groups_in_several_splits, write_csv, write_image


def test_summary_and_split_names(manifest_fixture: Path) -> None:
    archive = read_archive(manifest_fixture)
    summary = archive.summary()
    assert "manifest layout, multi-label, 2 classes; 5 samples (train 2, val 2, test 1)" in summary
    assert "Unlabelled: 1." in summary
    assert "image file missing 1" in summary
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        archive.split("validation")
    assert set(LAYOUTS) == {
        "manifest",
        "isic2018",
        "chestxray14",
        "medmnist",
        "class_folders",
        "image_folder",
    }


def test_given_split_that_leaks_a_group_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    write_csv(
        tmp_path / "labels.csv",
        ["file", "label", "split", "lesion_id"],
        [["a.png", "x", "train", "L1"], ["b.png", "y", "test", "L1"]],
    )
    with caplog.at_level(logging.WARNING, logger="archives"):
        archive = read_archive(tmp_path)
    assert groups_in_several_splits(archive.samples) == {"L1"}
    assert "1 groups (patients/lesions) have samples in more than one split" in caplog.text
