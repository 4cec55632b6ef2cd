"""The demo's own salt (``medret/demo_salt.py``): made once, private, reused; the
deployment's ``MEDRET_GROUP_SALT`` wins when set."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from commandline.errors import CommandError
from indexer.group_keys import checked_group_salt
from medret.demo_salt import GROUP_SALT_FILE, create_private_file, demo_group_salt
from support.group_salt import TEST_GROUP_SALT


@pytest.fixture(autouse=True)
def _no_deployment_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDRET_GROUP_SALT", raising=False)


def test_the_demo_makes_a_private_salt_once_and_reuses_it(tmp_path: Path) -> None:
    demo_dir = tmp_path / "data" / "demo"
    salt = demo_group_salt(demo_dir)
    path = demo_dir / GROUP_SALT_FILE
    assert checked_group_salt(salt) == salt
    assert path.read_text() == salt + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in demo_dir.iterdir()) == [GROUP_SALT_FILE]  # no temp file
    assert demo_group_salt(demo_dir) == salt
    assert demo_group_salt(tmp_path / "elsewhere") != salt  # random, not a constant


def test_runs_starting_together_all_get_the_one_salt(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; from medret.demo_salt import demo_group_salt; "
        "print(demo_group_salt(Path(sys.argv[1])))"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "demo")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    salts = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert salts == {(tmp_path / "demo" / GROUP_SALT_FILE).read_text().strip()}


def test_the_deployments_salt_wins_and_a_weak_one_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDRET_GROUP_SALT", TEST_GROUP_SALT)
    assert demo_group_salt(tmp_path / "demo") == TEST_GROUP_SALT
    assert not (tmp_path / "demo").exists()  # nothing of its own was made
    monkeypatch.setenv("MEDRET_GROUP_SALT", "medret")
    with pytest.raises(CommandError, match=r"^MEDRET_GROUP_SALT is too short.*or unset it"):
        demo_group_salt(tmp_path / "demo")


def test_a_damaged_stored_salt_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "demo" / GROUP_SALT_FILE
    create_private_file(path, "short\n")
    create_private_file(path, TEST_GROUP_SALT)  # an existing file is never replaced
    with pytest.raises(CommandError, match=f"the salt stored in {path} cannot be used"):
        demo_group_salt(tmp_path / "demo")
    assert path.read_text() == "short\n"
