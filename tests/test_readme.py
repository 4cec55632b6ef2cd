"""The README stays true to the code: its configuration table lists exactly the variables
the service reads, and the commands it gives exist."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import environment_variables

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT_ONLY = {"MEDRET_DB_WAIT_S"}  # read by docker/entrypoint.sh, not by the service


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_configuration_table_lists_every_setting() -> None:
    section = readme().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(MEDRET_[A-Z0-9_]+)` \|", section, flags=re.MULTILINE))
    assert listed == set(environment_variables()) | ENTRYPOINT_ONLY


def test_entrypoint_only_variables_are_read_by_the_entrypoint() -> None:
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    for name in ENTRYPOINT_ONLY:
        assert name in entrypoint


def test_the_two_commands_are_make_targets() -> None:
    text = readme()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"```bash\nmake {target}\n```" in text
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE)
