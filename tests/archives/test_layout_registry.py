"""Detection and reading through the registry: bad inputs, and one ordered list of layouts."""

from __future__ import annotations

import pkgutil
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from archives import layouts
from archives.records import ArchiveError
from archives.registry import LAYOUTS, REGISTRY, detect_layout, read_archive
from support.archives import make_class_folders, make_isic2018, write_csv, write_image


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


def test_every_layout_module_is_registered_once() -> None:
    modules = {f"{layouts.__name__}.{info.name}" for info in pkgutil.iter_modules(layouts.__path__)}
    registered = [layout.__name__ for layout in REGISTRY]
    assert sorted(registered) == sorted(modules)
    assert len(set(registered)) == len(registered)
    assert tuple(layout.NAME for layout in REGISTRY) == LAYOUTS
    assert all(f"{layouts.__name__}.{layout.NAME}" in modules for layout in REGISTRY)


def test_detection_walks_the_registry_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def refuse(name: str) -> Callable[[Path], bool]:
        return lambda root: asked.append(name) or False

    for layout in REGISTRY:
        monkeypatch.setattr(layout, "detect", refuse(layout.NAME))
    with pytest.raises(ArchiveError, match="matches no dataset layout"):
        detect_layout(tmp_path)
    assert asked == list(LAYOUTS)

    asked.clear()
    third = REGISTRY[2]
    monkeypatch.setattr(third, "detect", lambda root: asked.append(third.NAME) or True)
    assert detect_layout(tmp_path) == third.NAME
    assert asked == list(LAYOUTS[:3])


def test_the_first_matching_layout_wins(tmp_path: Path) -> None:
    root = make_class_folders(make_isic2018(tmp_path / "all"))
    write_csv(root / "Data_Entry_2017.csv", ["Image Index"], [])
    write_csv(root / "labels.csv", ["file", "label"], [])
    np.savez(root / "x.npz", train_images=np.zeros((1, 2, 2), np.uint8))
    markers = [
        ("isic2018", ["ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_GroundTruth"]),
        ("chestxray14", ["Data_Entry_2017.csv"]),
        ("manifest", ["labels.csv"]),
        ("medmnist", ["x.npz"]),
        ("class_folders", ["benign"]),
        ("image_folder", []),
    ]
    assert [name for name, _ in markers] == list(LAYOUTS)
    for name, paths in markers:
        assert detect_layout(root) == name
        for path in paths:
            target = root / path
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()


def test_the_messages_name_every_registered_layout(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as nothing:
        detect_layout(tmp_path)
    assert str(nothing.value) == (
        f"{tmp_path} matches no dataset layout: looked for ISIC2018_Task3_Training_Input/"
        "GroundTruth folders (isic2018), Data_Entry_2017.csv (chestxray14), labels.csv "
        "(manifest), a .npz file (medmnist), two or more class folders with images "
        "(class_folders) and any image file (.bmp, .dcm, .dicom, .jpeg, .jpg, .png, .tif, "
        ".tiff, .webp) (image_folder); found none"
    )
    text = tmp_path / "notes.txt"
    text.write_text("not an archive")
    with pytest.raises(ArchiveError) as a_file:
        detect_layout(text)
    assert str(a_file.value) == f"{text} is a file; give a dataset folder or a MedMNIST .npz file"
    with pytest.raises(ArchiveError) as unknown:
        read_archive(tmp_path, "csv")
    assert str(unknown.value) == f"unknown layout 'csv': choose one of {', '.join(LAYOUTS)}"
