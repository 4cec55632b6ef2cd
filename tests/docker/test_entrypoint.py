"""docker/entrypoint.sh, run with ``sh`` outside a container.

The dispatch logic is what is under test, so most tests put a fake ``medret`` first on
PATH: a shell script that records each call's arguments and answers as configured. One
test runs the real ``medret migrate`` through the entrypoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
SYSTEM_PATH = "/usr/bin:/bin"

# Records its arguments, prints FAKE_LIST for `index --list`, fails the first
# FAKE_MIGRATE_FAILURES calls of `migrate`, and exits with FAKE_EXIT_<COMMAND> (default 0).
FAKE_MEDRET = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
command=$1
case "$command" in
    migrate)
        failed=$(cat "$FAKE_LOG.migrate-failures" 2>/dev/null || echo 0)
        if [ "$failed" -lt "${FAKE_MIGRATE_FAILURES:-0}" ]; then
            echo $((failed + 1)) > "$FAKE_LOG.migrate-failures"
            echo "fake: connection refused" >&2
            exit 1
        fi
        echo '{"revision": "0001"}'
        ;;
    index)
        if [ "${2:-}" = "--list" ]; then printf '%s\\n' "${FAKE_LIST:-[]}"; fi
        ;;
esac
eval "exit \\${FAKE_EXIT_$command:-0}"
"""

STRONG_PASSWORD = "Xq7-2vLk9_pR4tWm8zNc"
POSTGRES_URL = f"postgresql+psycopg://medret:{STRONG_PASSWORD}@db:5432/medret"

NO_COLLECTIONS: list[object] = []
ACTIVE = [{"collection": "derm", "cases": 3, "versions": [{"version": 1, "active": True}]}]
INACTIVE_ONLY = [
    {"collection": "derm", "cases": 0, "versions": [{"version": 1, "active": False}]},
    {"collection": "cxr", "cases": 0, "versions": []},
]


class Entrypoint:
    """Runs the entrypoint with the fake medret and reads back the calls it made."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        fake = self.bin / "medret"
        fake.write_text(FAKE_MEDRET)
        fake.chmod(0o755)
        (self.bin / "python").symlink_to(sys.executable)
        self.log = tmp_path / "calls.log"
        self.env = {
            "PATH": f"{self.bin}:{SYSTEM_PATH}",
            "HOME": str(tmp_path),
            "FAKE_LOG": str(self.log),
        }

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(ENTRYPOINT), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def entrypoint(tmp_path: Path) -> Entrypoint:
    return Entrypoint(tmp_path)


@pytest.mark.parametrize("argv", [[], ["api"]], ids=["default", "api"])
def test_empty_store_migrates_then_builds_the_demo_then_serves(
    entrypoint: Entrypoint, argv: list[str]
) -> None:
    result = entrypoint.run(*argv, FAKE_LIST=json.dumps(NO_COLLECTIONS))
    assert result.returncode == 0, result.stderr
    assert entrypoint.calls() == ["migrate", "index --list", "demo --no-serve", "serve"]


def test_only_inactive_versions_still_builds_the_demo(entrypoint: Entrypoint) -> None:
    result = entrypoint.run("api", FAKE_LIST=json.dumps(INACTIVE_ONLY))
    assert result.returncode == 0, result.stderr
    assert "demo --no-serve" in entrypoint.calls()


def test_an_active_collection_skips_the_demo(entrypoint: Entrypoint) -> None:
    result = entrypoint.run("api", FAKE_LIST=json.dumps(ACTIVE))
    assert result.returncode == 0, result.stderr
    assert entrypoint.calls() == ["migrate", "index --list", "serve"]


def test_configured_collections_skip_the_demo(entrypoint: Entrypoint) -> None:
    result = entrypoint.run("api", MEDRET_COLLECTIONS="derm,cxr", FAKE_LIST="[]")
    assert result.returncode == 0, result.stderr
    assert entrypoint.calls() == ["migrate", "serve"]


def test_api_passes_its_options_to_serve_and_serve_exit_status_is_kept(
    entrypoint: Entrypoint,
) -> None:
    result = entrypoint.run(
        "api", "--port", "9000", FAKE_LIST=json.dumps(ACTIVE), FAKE_EXIT_serve="7"
    )
    assert result.returncode == 7
    assert entrypoint.calls()[-1] == "serve --port 9000"


def test_failed_migration_stops_before_serving(entrypoint: Entrypoint) -> None:
    result = entrypoint.run("api", FAKE_EXIT_migrate="1")
    assert result.returncode != 0
    assert entrypoint.calls() == ["migrate"]
    assert "migrate" in result.stderr


def test_failed_demo_stops_before_serving(entrypoint: Entrypoint) -> None:
    result = entrypoint.run("api", FAKE_LIST="[]", FAKE_EXIT_demo="1")
    assert result.returncode != 0
    assert "serve" not in entrypoint.calls()
    assert "demo" in result.stderr


def test_unreadable_listing_stops_before_serving(entrypoint: Entrypoint) -> None:
    result = entrypoint.run("api", FAKE_LIST="not json")
    assert result.returncode != 0
    assert entrypoint.calls() == ["migrate", "index --list"]


def test_postgres_migration_is_retried_until_the_database_answers(
    entrypoint: Entrypoint,
) -> None:
    result = entrypoint.run(
        "api",
        MEDRET_DATABASE_URL=POSTGRES_URL,
        MEDRET_DB_WAIT_S="30",
        FAKE_MIGRATE_FAILURES="1",
        FAKE_LIST=json.dumps(ACTIVE),
    )
    assert result.returncode == 0, result.stderr
    assert entrypoint.calls() == ["migrate", "migrate", "index --list", "serve"]
    assert "retrying" in result.stderr
    assert STRONG_PASSWORD not in result.stderr  # the URL, with its password, is never printed


def test_postgres_that_never_answers_fails_with_a_clear_message(entrypoint: Entrypoint) -> None:
    result = entrypoint.run(
        "api",
        MEDRET_DATABASE_URL=POSTGRES_URL,
        MEDRET_DB_WAIT_S="0",
        FAKE_MIGRATE_FAILURES="100",
    )
    assert result.returncode == 1
    assert entrypoint.calls() == ["migrate"]
    assert "MEDRET_DB_WAIT_S=0s" in result.stderr


def test_a_bad_wait_setting_is_refused(entrypoint: Entrypoint) -> None:
    result = entrypoint.run(
        "migrate", MEDRET_DATABASE_URL="postgresql://db/medret", MEDRET_DB_WAIT_S="soon"
    )
    assert result.returncode == 1
    assert "MEDRET_DB_WAIT_S" in result.stderr
    assert entrypoint.calls() == []


@pytest.mark.parametrize("password", ["CHANGE_ME", "change-me", "postgres", "Password"])
@pytest.mark.parametrize("command", ["api", "migrate", "index", "follow"])
def test_a_placeholder_database_password_is_refused(
    entrypoint: Entrypoint, command: str, password: str
) -> None:
    result = entrypoint.run(
        command, MEDRET_DATABASE_URL=f"postgresql+psycopg://medret:{password}@db:5432/medret"
    )
    assert result.returncode == 1
    assert "MEDRET_DATABASE_URL is a placeholder" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr
    assert entrypoint.calls() == []  # nothing ran, not even the migration


def test_a_short_or_placeholder_postgres_password_variable_is_refused(
    entrypoint: Entrypoint,
) -> None:
    result = entrypoint.run("api", POSTGRES_PASSWORD="hunter2", MEDRET_DATABASE_URL=POSTGRES_URL)
    assert result.returncode == 1
    assert "POSTGRES_PASSWORD is shorter than 16 characters" in result.stderr
    assert "hunter2" not in result.stderr
    assert entrypoint.calls() == []
    short_in_url = POSTGRES_URL.replace(STRONG_PASSWORD, "s3cr3t%21")  # percent-encoded
    result = entrypoint.run("serve", MEDRET_DATABASE_URL=short_in_url)
    assert result.returncode == 1
    assert "MEDRET_DATABASE_URL is shorter than 16 characters" in result.stderr
    result = entrypoint.run("index", "--list", POSTGRES_PASSWORD="change_me")
    assert "POSTGRES_PASSWORD is a placeholder" in result.stderr
    assert entrypoint.calls() == []


def test_a_strong_password_or_none_in_the_url_is_accepted(entrypoint: Entrypoint) -> None:
    result = entrypoint.run(
        "index", "--list", POSTGRES_PASSWORD=STRONG_PASSWORD, MEDRET_DATABASE_URL=POSTGRES_URL
    )
    assert result.returncode == 0, result.stderr
    result = entrypoint.run("serve", MEDRET_DATABASE_URL="postgresql+psycopg://medret@db/medret")
    assert result.returncode == 0, result.stderr  # no password: peer or .pgpass authentication
    assert entrypoint.calls() == ["index --list", "serve"]
    assert entrypoint.run("sh", "-c", "true", POSTGRES_PASSWORD="x").returncode == 0  # debugging


@pytest.mark.parametrize("argv", [["--help"], ["-x"], ["frobnicate", "now"]])
def test_unknown_commands_print_usage_and_exit_2(entrypoint: Entrypoint, argv: list[str]) -> None:
    result = entrypoint.run(*argv)
    assert result.returncode == 2
    assert "usage: medret-entrypoint" in result.stderr
    assert entrypoint.calls() == []


@pytest.mark.parametrize(
    "argv",
    [
        ["index", "--list"],
        ["index", "--collection", "derm", "--source", "/archive", "--checkpoint", "/runs/m.st"],
        ["train", "--data", "/dataset", "--out", "/runs/model"],
        ["demo", "--no-serve"],
        ["follow", "--collection", "cxr", "--source", "dicomweb+http://orthanc:8042/dicom-web"],
        ["serve", "--port", "9000"],
    ],
)
def test_medret_commands_pass_their_arguments_through(
    entrypoint: Entrypoint, argv: list[str]
) -> None:
    result = entrypoint.run(*argv, FAKE_LIST=json.dumps(ACTIVE))
    assert result.returncode == 0, result.stderr
    assert entrypoint.calls() == [" ".join(argv)]


def test_index_list_output_and_exit_status_pass_through(entrypoint: Entrypoint) -> None:
    result = entrypoint.run("index", "--list", FAKE_LIST=json.dumps(ACTIVE), FAKE_EXIT_index="2")
    assert result.returncode == 2
    assert json.loads(result.stdout) == ACTIVE


def test_migrate_runs_the_real_medret_and_creates_the_sqlite_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    venv_bin = Path(sys.executable).parent
    env = {
        "PATH": f"{venv_bin}:{SYSTEM_PATH}",
        "HOME": str(tmp_path),
        "MEDRET_DATA_DIR": str(data_dir),
    }
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (data_dir / "medret.db").is_file()
    assert json.loads(result.stdout)["revision"]


def test_the_entrypoint_is_posix_sh_and_executable() -> None:
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK)
    syntax = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
