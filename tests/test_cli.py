"""The ``medret`` console script, run as a user would (a real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SUBCOMMANDS = ["train", "evaluate", "ablate", "index", "serve", "demo", "inspect", "explain"]


def medret(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("medret")
    cmd = [exe] if exe else [sys.executable, "-m", "medret"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, check=False)


def test_help_lists_every_subcommand() -> None:
    result = medret("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str) -> None:
    result = medret(name, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: medret {name}" in result.stdout


def test_no_subcommand_is_an_error() -> None:
    result = medret()
    assert result.returncode == 2
    assert "required" in result.stderr


def test_inspect_reports_a_decoded_image(tmp_path: Path) -> None:
    path = tmp_path / "scan.jpg"  # a PNG under a JPEG name: content decides
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(path, format="PNG")
    result = medret("inspect", str(path), "--size", "64")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["format"] == "PNG"
    assert report["shape"] == [30, 40, 1]
    assert report["model_input"] == [3, 64, 64]


def test_inspect_fails_cleanly_on_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("these are not pixels")
    result = medret("inspect", str(bad), str(tmp_path / "missing.dcm"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "not an image" in lines[0]
    assert "missing.dcm" in lines[1]
    assert "Traceback" not in result.stderr
