"""Samples stay inside the archive folder (issue #12): a file, or a folder on the way to it,
that is a symbolic link out of the folder is not read, in every layout, and is counted as
skipped; links that stay inside the folder are fine."""

from __future__ import annotations

from pathlib import Path

import pytest

from archives.records import OUTSIDE_ROOT, ArchiveError
from archives.registry import read_archive
from support.archives import by_key, make_class_folders, write_csv, write_image


def secret_image(tmp_path: Path) -> Path:
    """An image outside every archive folder: what a link out of an archive points at."""
    return write_image(tmp_path / "elsewhere" / "secret.png", value=7)


def test_a_file_linked_out_of_the_folder_is_skipped_and_counted(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "archive", per_class=3)
    (root / "benign" / "link-out.png").symlink_to(secret_image(tmp_path))
    archive = read_archive(root, "class_folders")
    samples = by_key(archive)
    assert "benign/link-out.png" not in samples
    assert len(samples) == 6
    assert archive.skipped[OUTSIDE_ROOT] == 1
    assert "path outside the archive folder 1" in archive.summary()
    assert all(
        "elsewhere" not in str(s.path.resolve()) for s in archive.samples if s.path is not None
    )


def test_a_link_inside_the_folder_is_read(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "archive", per_class=3)
    (root / "malignant" / "alias.png").symlink_to(root / "benign" / "000.png")
    (root / "benign" / "relative.png").symlink_to(Path("..") / "malignant" / "001.png")
    archive = read_archive(root, "class_folders")
    samples = by_key(archive)
    assert {"malignant/alias.png", "benign/relative.png"} <= set(samples)
    assert OUTSIDE_ROOT not in archive.skipped


def test_a_class_folder_linked_out_of_the_folder_is_skipped(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "archive", per_class=2)
    outside = tmp_path / "other-patients"
    for i in range(3):
        write_image(outside / f"{i}.png", value=i)
    (root / "malignant" / "more").symlink_to(outside, target_is_directory=True)
    (root / "linked-class").symlink_to(outside, target_is_directory=True)
    archive = read_archive(root, "class_folders")
    assert all(not key.startswith("linked-class/") for key in by_key(archive))
    assert len(archive.samples) == 4
    assert archive.skipped[OUTSIDE_ROOT] == 3  # the folder of three, once


def test_a_manifest_row_through_a_linked_folder_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "manifest"
    write_image(root / "images" / "a.png", value=1)
    write_image(root / "images" / "b.png", value=2)
    secret_image(tmp_path)
    (root / "images" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    write_csv(
        root / "labels.csv",
        ["file", "label"],
        [["images/a.png", "x"], ["images/b.png", "y"], ["images/linked/secret.png", "x"]],
    )
    archive = read_archive(root, "manifest")
    assert set(by_key(archive)) == {"images/a.png", "images/b.png"}
    assert archive.skipped[OUTSIDE_ROOT] == 1


def test_an_archive_whose_every_file_links_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    secret = secret_image(tmp_path)
    for name in ("benign", "malignant"):
        (root / name).mkdir(parents=True)
        (root / name / "only.png").symlink_to(secret)
    with pytest.raises(ArchiveError, match="no usable samples") as refused:
        read_archive(root, "class_folders")
    assert "path outside the archive folder: 2" in str(refused.value)
