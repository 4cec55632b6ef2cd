"""``medret index`` keeps to the archive roots (issue #12): with ``MEDRET_ARCHIVE_ROOTS`` set
(as in a job the service starts) a source outside them is refused by the process that would
read it, and files linked out of the source are left out and counted in the JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from archives.records import OUTSIDE_ROOT
from support.archives import make_class_folders, write_image
from support.checkpoints import make_checkpoint

# a fixed random salt (secrets.token_hex(32)): indexing outside the demo needs one
GROUP_SALT = "369b77da7ed97110da3736d003d3b77a4664e51e00b3e381cee7bbfd0e37be2c"


def index(source: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    checkpoint = tmp_path / "model.safetensors"
    if not checkpoint.exists():
        make_checkpoint(checkpoint, ("benign", "malignant"))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    return subprocess.run(
        [sys.executable, "-m", "medret", "index", "--collection", "lesions",
         "--source", str(source), "--checkpoint", str(checkpoint),
         "--data-dir", str(tmp_path / "data"), "--workers", "0", "--device", "cpu"],
        env={**inherited, "MEDRET_GROUP_SALT": GROUP_SALT, "TQDM_DISABLE": "1", **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip


def test_links_out_of_the_source_are_not_indexed_and_are_reported(tmp_path: Path) -> None:
    roots = tmp_path / "archives"
    source = make_class_folders(roots / "lesions", per_class=3)
    secret = write_image(tmp_path / "elsewhere" / "secret.png", value=9)
    (source / "benign" / "link-out.png").symlink_to(secret)
    (source / "malignant" / "link-in.png").symlink_to(source / "benign" / "000.png")
    result = index(source, tmp_path, MEDRET_ARCHIVE_ROOTS=str(roots))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped_files"][OUTSIDE_ROOT] == 1
    assert report["added"] == 6
    assert report["duplicates"] == 1  # the link inside was read: the same content again
    assert "benign/link-out.png" not in result.stdout


def test_a_source_outside_the_archive_roots_is_refused(tmp_path: Path) -> None:
    roots = tmp_path / "archives"
    roots.mkdir()
    outside = make_class_folders(tmp_path / "elsewhere", per_class=2)
    (roots / "linked").symlink_to(outside, target_is_directory=True)
    for source in (outside, roots / "linked", roots / ".." / "elsewhere"):
        result = index(source, tmp_path, MEDRET_ARCHIVE_ROOTS=f"{tmp_path / 'other'},{roots}")
        assert result.returncode == 2, result.stdout  # a command error
        assert "is outside the folders of MEDRET_ARCHIVE_ROOTS" in result.stderr
        assert "Traceback" not in result.stderr
    assert not list((tmp_path / "data").glob("**/*.faiss"))  # nothing was built
