"""Shared fixtures: where the real images live, small generated ones, and a real PACS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from support.orthanc import Orthanc, require_orthanc

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (the real medical images)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real images not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc with its DICOMweb plugin on a free loopback port, empty, for one
    test (skipped without Debian's orthanc packages, failed instead under ``CI``)."""
    require_orthanc()
    with Orthanc(tmp_path / "orthanc") as server:
        yield server
