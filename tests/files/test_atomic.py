"""files.atomic: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from files.atomic import (
    atomic_path,
    atomic_paths,
    atomic_write_bytes,
    atomic_write_text,
    atomic_writer,
    current_umask,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_bytes_and_text_replace_the_target_and_leave_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    atomic_write_text(tmp_path / "note.txt", "grüße\n")
    assert (tmp_path / "note.txt").read_text(encoding="utf-8") == "grüße\n"
    assert leftovers(tmp_path) == []
    assert leftovers(target.parent) == []


def test_a_new_file_gets_the_permissions_an_ordinary_open_gives(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a", b"x")
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_a_failure_while_writing_keeps_the_old_content_and_removes_the_temporary(
    tmp_path: Path,
) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")

    def write_and_fail() -> None:
        with atomic_writer(target, "w") as out:
            out.write("half of the new")
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_and_fail()
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_library_that_writes_by_file_name_gets_a_temporary_path(tmp_path: Path) -> None:
    target = tmp_path / "vectors.npy"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path
        assert temp != target
        with temp.open("wb") as out:
            np.save(out, np.arange(4))
        assert not target.exists()  # nothing is visible before the block ends
    np.testing.assert_array_equal(np.load(target), np.arange(4))


def test_several_files_are_replaced_in_order_or_not_at_all(tmp_path: Path) -> None:
    first, second = tmp_path / "index.faiss", tmp_path / "index.json"
    with atomic_paths(first, second) as (a, b):
        a.write_bytes(b"index")
        b.write_bytes(b"sidecar")
    assert (first.read_bytes(), second.read_bytes()) == (b"index", b"sidecar")

    def write_one_and_fail() -> None:
        with atomic_paths(first, second) as (a, _):
            a.write_bytes(b"new index")
            raise OSError("device full")

    with pytest.raises(OSError, match="full"):
        write_one_and_fail()
    assert (first.read_bytes(), second.read_bytes()) == (b"index", b"sidecar")
    assert leftovers(tmp_path) == []


def test_a_process_killed_in_the_middle_of_a_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.bin"
    target.write_bytes(b"complete old checkpoint")
    script = (
        "import os, sys\n"
        "from files.atomic import atomic_writer\n"
        "with atomic_writer(sys.argv[1]) as out:\n"
        "    out.write(b'partial new')\n"
        "    out.flush()\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)], cwd=repo, env={**os.environ}, check=False
    )
    assert done.returncode == -9
    assert target.read_bytes() == b"complete old checkpoint"
