"""The chestxray14 layout: a tiny partially downloaded NIH ChestX-ray14 folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from archives.records import MISSING_IMAGE, NOT_IN_SPLIT_LISTS, ArchiveError
from archives.registry import read_archive
from support.archives import NIH_FINDINGS, NIH_ROWS, by_key, groups_in_several_splits, split_counts


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
