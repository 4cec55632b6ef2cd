"""The medmnist layout: MedMNIST v2 style .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from archives.content import load_pixels
from archives.records import ArchiveError
from archives.registry import read_archive
from labels import Task
from support.archives import make_medmnist, split_counts


def test_medmnist_multi_label_rgb_from_the_file_path(tmp_path: Path) -> None:
    path = make_medmnist(tmp_path / "chestmnist.npz", columns=4, rgb=True)
    archive = read_archive(path)
    assert archive.task is Task.MULTI_LABEL
    assert archive.codes == ("0", "1", "2", "3")
    assert split_counts(archive) == {"train": 6, "val": 2, "test": 3}
    sample = archive.split("test")[2]
    pixels = load_pixels(sample)
    assert pixels.shape == (5, 5, 3)
    assert (pixels == 2).all()
    with np.load(path) as npz:
        np.testing.assert_array_equal(archive.targets(archive.split("val")), npz["val_labels"])


def test_medmnist_refuses_non_binary_label_columns(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    images = np.zeros((2, 4, 4), np.uint8)
    np.savez(path, train_images=images, train_labels=np.array([[0, 2], [1, 0]], np.uint8))
    with pytest.raises(ArchiveError, match="values other than 0 and 1"):
        read_archive(tmp_path)
