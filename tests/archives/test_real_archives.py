"""The real sets in ../shared/data read as archives (skipped without them)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from archives.content import load_pixels
from archives.records import MISSING_IMAGE, Archive
from archives.registry import detect_layout, read_archive
from labels import Task
from support.archives import ISIC_CODES, NIH_FINDINGS, groups_in_several_splits, split_counts


@pytest.fixture(scope="module")
def ham10000(shared_data: Path) -> Archive:
    return read_archive(shared_data / "ham10000")


@pytest.fixture(scope="module")
def chestxray14(shared_data: Path) -> Archive:
    return read_archive(shared_data / "chestxray14")


@pytest.fixture(scope="module")
def pneumoniamnist(shared_data: Path) -> Archive:
    return read_archive(shared_data / "pneumoniamnist")


def test_ham10000_reads_as_the_manifest_with_its_given_split(ham10000: Archive) -> None:
    assert ham10000.layout == "manifest"
    assert ham10000.task is Task.SINGLE_LABEL
    assert ham10000.codes == ISIC_CODES
    assert ham10000.names[0] == "Melanoma"
    assert len(ham10000.samples) == 5105
    assert split_counts(ham10000) == {"train": 3573, "val": 766, "test": 766}
    classes = Counter(sample.labels[0] for sample in ham10000.samples)
    assert classes == {
        "NV": 3885,
        "BKL": 447,
        "MEL": 324,
        "BCC": 192,
        "AKIEC": 148,
        "VASC": 62,
        "DF": 47,
    }
    assert all(sample.path is not None and sample.path.is_file() for sample in ham10000.samples)
    assert all(sample.group and sample.group.startswith("HAM_") for sample in ham10000.samples)
    assert groups_in_several_splits(ham10000.samples) == set()
    assert dict(ham10000.skipped) == {}


def test_ham10000_targets_are_class_indices(ham10000: Archive) -> None:
    samples = ham10000.split("val")
    targets = ham10000.targets(samples)
    assert targets.dtype == np.int64
    assert targets.shape == (766,)
    assert [ham10000.codes[i] for i in targets[:20]] == [s.labels[0] for s in samples[:20]]
    assert ham10000.label_space().codes == ISIC_CODES


def test_chestxray14_keeps_present_images_and_counts_the_rest(
    chestxray14: Archive, shared_data: Path
) -> None:
    rows = sum(1 for _ in (shared_data / "chestxray14" / "Data_Entry_2017.csv").open()) - 1
    assert chestxray14.layout == "chestxray14"
    assert chestxray14.task is Task.MULTI_LABEL
    assert chestxray14.codes == NIH_FINDINGS
    assert chestxray14.names[12] == "Pleural Thickening"
    assert len(chestxray14.samples) == 546
    assert dict(chestxray14.skipped) == {MISSING_IMAGE: rows - 546}
    assert all(sample.path is not None and sample.path.is_file() for sample in chestxray14.samples)
    assert f"{rows - 546:,}" in chestxray14.summary()


def test_chestxray14_splits_by_patient_and_respects_the_test_list(
    chestxray14: Archive, shared_data: Path
) -> None:
    test_list = set((shared_data / "chestxray14" / "test_list.txt").read_text().split())
    assert all((s.key in test_list) == (s.split == "test") for s in chestxray14.samples)
    assert groups_in_several_splits(chestxray14.samples) == set()
    counts = split_counts(chestxray14)
    assert 0.05 < counts["val"] / (counts["val"] + counts["train"]) < 0.15
    assert {"age", "sex", "view_position"} <= set(chestxray14.samples[0].metadata)


def test_chestxray14_targets_are_multi_hot_and_no_finding_is_zero(
    chestxray14: Archive,
) -> None:
    targets = chestxray14.targets(chestxray14.samples)
    assert targets.dtype == np.float32
    assert targets.shape == (546, 14)
    no_finding = np.array([not sample.labels for sample in chestxray14.samples])
    assert no_finding.any()
    assert not targets[no_finding].any()
    assert (targets[~no_finding].sum(axis=1) >= 1).all()
    assert targets.sum() == sum(len(sample.labels) for sample in chestxray14.samples)


def test_pneumoniamnist_reads_arrays(pneumoniamnist: Archive, shared_data: Path) -> None:
    assert pneumoniamnist.layout == "medmnist"
    assert pneumoniamnist.task is Task.SINGLE_LABEL
    assert pneumoniamnist.codes == ("normal", "pneumonia")
    assert pneumoniamnist.names == ("Normal", "Pneumonia")
    assert split_counts(pneumoniamnist) == {"train": 2428, "val": 270, "test": 468}
    sample = pneumoniamnist.split("test")[5]
    assert sample.key == "test/5"
    pixels = load_pixels(sample)
    assert pixels.shape == (28, 28, 1)
    assert pixels.dtype == np.uint8
    with np.load(shared_data / "pneumoniamnist" / "pneumoniamnist.npz") as npz:
        np.testing.assert_array_equal(pixels[:, :, 0], npz["test_images"][5])
        expected = npz["train_labels"][:, 0]
    np.testing.assert_array_equal(pneumoniamnist.targets(pneumoniamnist.split("train")), expected)


def test_detect_layout_on_the_real_data(shared_data: Path) -> None:
    assert detect_layout(shared_data / "ham10000") == "manifest"
    assert detect_layout(shared_data / "chestxray14") == "chestxray14"
    assert detect_layout(shared_data / "pneumoniamnist") == "medmnist"
    assert detect_layout(shared_data / "pneumoniamnist" / "pneumoniamnist.npz") == "medmnist"
    assert detect_layout(shared_data / "ham10000" / "images") == "image_folder"
