"""Fixtures: tiny dataset folders in the ISIC 2018, NIH ChestX-ray14 and manifest layouts
(built by :mod:`support.archives`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.archives import make_chestxray14, make_isic2018, make_manifest


@pytest.fixture
def isic_fixture(tmp_path: Path) -> Path:
    """ISIC 2018 Task 3 without a validation part, with HAM10000_metadata.csv."""
    return make_isic2018(tmp_path / "isic2018")


@pytest.fixture
def nih_fixture(tmp_path: Path) -> Path:
    """A partially downloaded ChestX-ray14 folder (see ``support.archives.NIH_ROWS``)."""
    return make_chestxray14(tmp_path / "chestxray14")


@pytest.fixture
def manifest_fixture(tmp_path: Path) -> Path:
    """A labels.csv manifest with multi-label, unlabelled, DICOM and missing rows."""
    return make_manifest(tmp_path / "manifest")
