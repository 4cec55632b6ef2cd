"""Dataset layouts → archives: the real sets in ../shared/data and tiny generated folders."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from archive_fixtures import (
    NIH_ROWS,
    make_class_folders,
    make_isic2018,
    make_medmnist,
    make_split_class_folders,
    write_csv,
    write_dicom,
    write_image,
)

from model.archives import (
    LAYOUTS,
    MISSING_IMAGE,
    NOT_IN_GROUND_TRUTH,
    NOT_IN_SPLIT_LISTS,
    OUTSIDE_CLASS_FOLDER,
    OUTSIDE_ROOT,
    Archive,
    ArchiveError,
    Sample,
    detect_layout,
    load_pixels,
    read_archive,
)
from model.config import Task

ISIC_CODES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
NIH_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)


def split_counts(archive: Archive) -> dict[str, int]:
    return dict(Counter(sample.split for sample in archive.samples))


def groups_in_several_splits(samples: Sequence[Sample]) -> set[str]:
    splits_of: dict[str, set[str]] = defaultdict(set)
    for sample in samples:
        splits_of[sample.group or sample.key].add(sample.split)
    return {group for group, splits in splits_of.items() if len(splits) > 1}


def by_key(archive: Archive) -> dict[str, Sample]:
    return {sample.key: sample for sample in archive.samples}


# --------------------------------------------------------------------------- real data


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


# --------------------------------------------------------------------------- ISIC 2018


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


# --------------------------------------------------------------------------- ChestX-ray14


def test_nih_fixture_reads_present_rows_and_counts_skips(nih_fixture: Path) -> None:
    archive = read_archive(nih_fixture, val_fraction=0.25)
    assert archive.layout == "chestxray14"
    assert archive.codes == NIH_FINDINGS
    present = {name for name, _, _, is_present, listed in NIH_ROWS if is_present and listed}
    assert set(by_key(archive)) == present
    assert dict(archive.skipped) == {MISSING_IMAGE: 3, NOT_IN_SPLIT_LISTS: 1}
    samples = by_key(archive)
    assert samples["00000003_001.png"].labels == ("Atelectasis", "Effusion", "Hernia")
    assert samples["00000003_001.png"].split == "test"
    assert samples["00000002_000.png"].labels == ()
    assert samples["00000002_000.png"].labelled
    assert samples["00000001_001.png"].group == "1"
    assert samples["00000001_001.png"].metadata == {
        "age": "51",
        "sex": "F",
        "view_position": "PA",
    }
    assert {s.split for s in archive.samples if s.key.startswith("00000003")} == {"test"}
    assert len(archive.split("val")) >= 1
    assert groups_in_several_splits(archive.samples) == set()
    targets = archive.targets([samples["00000002_000.png"], samples["00000005_000.png"]])
    assert targets.shape == (2, 14)
    assert targets[0].sum() == 0
    assert targets[1, NIH_FINDINGS.index("Mass")] == 1
    assert targets[1, NIH_FINDINGS.index("Pleural_Thickening")] == 1


def test_nih_without_split_lists_carves_all_splits_by_patient(nih_fixture: Path) -> None:
    (nih_fixture / "train_val_list.txt").unlink()
    (nih_fixture / "test_list.txt").unlink()
    archive = read_archive(nih_fixture, val_fraction=0.2)
    assert len(archive.samples) == 9
    assert set(split_counts(archive)) == {"train", "val", "test"}
    assert groups_in_several_splits(archive.samples) == set()


def test_nih_unknown_finding_is_refused(nih_fixture: Path) -> None:
    labels = nih_fixture / "Data_Entry_2017.csv"
    labels.write_text(labels.read_text().replace("Nodule", "Nodules"))
    with pytest.raises(ArchiveError, match=r"line \d+: unknown finding 'Nodules'"):
        read_archive(nih_fixture)


# --------------------------------------------------------------------------- manifest


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


# --------------------------------------------------------------------------- MedMNIST


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


# --------------------------------------------------------------------------- folders


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


# --------------------------------------------------------------------------- bad inputs


def test_empty_folder_names_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"matches no dataset layout: looked for ISIC2018"):
        read_archive(tmp_path)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="does not exist"):
        read_archive(tmp_path / "nowhere")


def test_explicit_layout_that_does_not_match(tmp_path: Path) -> None:
    manifest_fixture = tmp_path / "ham"
    write_image(manifest_fixture / "images" / "a.png")
    write_csv(manifest_fixture / "labels.csv", ["file", "label"], [["images/a.png", "NV"]])
    with pytest.raises(ArchiveError, match=r"no Data_Entry_2017\.csv"):
        read_archive(manifest_fixture, "chestxray14")
    with pytest.raises(ArchiveError, match="not an ISIC 2018 Task 3 folder"):
        read_archive(manifest_fixture, "isic2018")
    with pytest.raises(ArchiveError, match=r"no \.npz file"):
        read_archive(manifest_fixture, "medmnist")
    with pytest.raises(ArchiveError, match=r"two or more class folders .* found 1: images"):
        read_archive(manifest_fixture, "class_folders")
    with pytest.raises(ArchiveError, match="unknown layout 'csv'"):
        read_archive(manifest_fixture, "csv")


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
    with caplog.at_level(logging.WARNING, logger="model.archives"):
        archive = read_archive(tmp_path)
    assert groups_in_several_splits(archive.samples) == {"L1"}
    assert "1 groups (patients/lesions) have samples in more than one split" in caplog.text
