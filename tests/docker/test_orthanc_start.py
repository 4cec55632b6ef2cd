"""docker/orthanc-start.sh, run with ``sh`` outside a container.

The image's own entrypoint is replaced (``ORTHANC_IMAGE_ENTRYPOINT``) by a script that
writes down the arguments and the ``ORTHANC*`` environment it was started with, so the
tests read exactly what Orthanc's configuration would be generated from.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START = REPO / "docker" / "orthanc-start.sh"
STRONG_PASSWORD = "Zr8-Kq2wLp5_mT9vXc4N"

FAKE_IMAGE_ENTRYPOINT = """#!/bin/sh
python3 -c '
import json, os, sys
seen = {k: v for k, v in os.environ.items() if k.startswith("ORTHANC")}
json.dump({"argv": sys.argv[1:], "env": seen}, open(os.environ["FAKE_OUT"], "w"))
' "$@"
"""


def start(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    fake = tmp_path / "docker-entrypoint.sh"
    fake.write_text(FAKE_IMAGE_ENTRYPOINT)
    fake.chmod(0o755)
    out = tmp_path / "started.json"
    result = subprocess.run(
        ["sh", str(START), "/tmp/orthanc.json"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "ORTHANC_IMAGE_ENTRYPOINT": str(fake),
            "FAKE_OUT": str(out),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result, out


def test_a_strong_password_registers_one_user_and_turns_authentication_on(
    tmp_path: Path,
) -> None:
    result, out = start(tmp_path, ORTHANC_PASSWORD=STRONG_PASSWORD, ORTHANC_USERNAME="medret")
    assert result.returncode == 0, result.stderr
    started = json.loads(out.read_text())
    assert started["argv"] == ["/tmp/orthanc.json"]
    env = started["env"]
    assert json.loads(env["ORTHANC__REGISTERED_USERS"]) == {"medret": STRONG_PASSWORD}
    assert env["ORTHANC__AUTHENTICATION_ENABLED"] == "true"
    assert "ORTHANC_PASSWORD" not in env  # handed over only inside the user table
    assert STRONG_PASSWORD not in result.stdout + result.stderr


def test_the_user_defaults_to_medret(tmp_path: Path) -> None:
    result, out = start(tmp_path, ORTHANC_PASSWORD=STRONG_PASSWORD)
    assert result.returncode == 0, result.stderr
    users = json.loads(json.loads(out.read_text())["env"]["ORTHANC__REGISTERED_USERS"])
    assert users == {"medret": STRONG_PASSWORD}


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        (None, "ORTHANC_PASSWORD is not set"),
        ("", "ORTHANC_PASSWORD is not set"),
        ("CHANGE_ME", "ORTHANC_PASSWORD is a placeholder"),
        ("Orthanc", "ORTHANC_PASSWORD is a placeholder"),
        ("hunter2", "ORTHANC_PASSWORD is shorter than 16 characters"),
        ('Zr8"Kq2wLp5 mT9vXc4N', "letters, digits, - and _ only"),
    ],
)
def test_a_missing_weak_or_unquotable_password_stops_orthanc_from_starting(
    tmp_path: Path, password: str | None, reason: str
) -> None:
    env = {} if password is None else {"ORTHANC_PASSWORD": password}
    result, out = start(tmp_path, **env)
    assert result.returncode == 1
    assert reason in result.stderr
    assert "secrets.token_urlsafe" in result.stderr
    assert not out.exists()  # Orthanc never started
    if password:
        assert password not in result.stderr


def test_a_username_that_would_break_the_json_is_refused(tmp_path: Path) -> None:
    result, out = start(tmp_path, ORTHANC_PASSWORD=STRONG_PASSWORD, ORTHANC_USERNAME='a", "b')
    assert result.returncode == 1
    assert "ORTHANC_USERNAME may use" in result.stderr
    assert not out.exists()


def test_the_start_script_is_posix_sh() -> None:
    assert START.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(START)], check=True)
