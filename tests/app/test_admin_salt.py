"""Reindex jobs and the salt: a service without one (or with another than the collection's)
refuses at once; a job process sees only the variables it needs, never the admin token."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from indexer.group_keys import group_salt_fingerprint
from indexer.store import MetadataStore
from support.archives import make_grouped_manifest
from support.checkpoints import make_checkpoint
from support.group_salt import OTHER_GROUP_SALT, TEST_GROUP_SALT
from support.http import assert_json_answer
from support.server import start_server
from support.service import ADMIN_AUTH, ADMIN_TOKEN, ServiceEnv, build_collection, wait_for_job

# Imported by every Python process started with its folder on PYTHONPATH: it writes the
# process's command line and environment beside itself, as the process saw them.
ENVIRONMENT_PROBE = """\
import json, os, pathlib
cmdline = pathlib.Path("/proc/self/cmdline").read_bytes().decode().split("\\0")
record = {"cmdline": [part for part in cmdline if part], "environ": dict(os.environ)}
pathlib.Path(__file__).with_name(f"seen-{os.getpid()}.json").write_text(json.dumps(record))
"""


@pytest.fixture
def grouped_env(tmp_path: Path) -> ServiceEnv:
    """Collection "derm": four images of three patients, hashed with the test salt."""
    archive_root = tmp_path / "archives"
    archive = make_grouped_manifest(archive_root / "grouped")
    checkpoint = make_checkpoint(archive_root / "derm.safetensors", ("A", "B"))
    url = f"sqlite:///{tmp_path / 'medret.db'}"
    build_collection(url, tmp_path / "data", "derm", checkpoint, archive)
    return ServiceEnv(tmp_path / "data", url, checkpoint, archive, archive_root)


def job_count(env: ServiceEnv) -> int:
    store = MetadataStore.open(env.database_url)
    try:
        return len(store.list_jobs())
    finally:
        store.close()


def test_the_job_process_gets_the_salt_and_never_the_admin_token(
    grouped_env: ServiceEnv, tmp_path: Path
) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text(ENVIRONMENT_PROBE)
    log_path = tmp_path / "server.log"
    extra = {"PYTHONPATH": str(probe), "CLOUD_SECRET_KEY": "no-job-needs-this"}
    with (
        start_server(grouped_env, log_path, **extra) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        started = client.post(
            "/admin/reindex",
            json={"collection": "derm", "source": str(grouped_env.archive)},
            headers=ADMIN_AUTH,
        )
        job_id = assert_json_answer(started, {202})["job_id"]
        job = wait_for_job(client, job_id)
        assert job["state"] == "succeeded", job  # it had all it needed: salt, database, roots
        seen = [json.loads(path.read_text()) for path in probe.glob("seen-*.json")]
    (server_seen,) = [s for s in seen if s["cmdline"][-1:] == ["serve"]]
    assert server_seen["environ"]["MEDRET_ADMIN_TOKEN"] == ADMIN_TOKEN  # the probe sees it
    (job_seen,) = [s for s in seen if job_id in s["cmdline"]]
    environ, cmdline = job_seen["environ"], job_seen["cmdline"]

    assert "MEDRET_ADMIN_TOKEN" not in environ
    assert ADMIN_TOKEN not in json.dumps(job_seen)
    assert "CLOUD_SECRET_KEY" not in environ
    assert {name for name in environ if name.startswith("MEDRET_")} == {
        "MEDRET_DATABASE_URL",
        "MEDRET_GROUP_SALT",
        "MEDRET_ARCHIVE_ROOTS",
    }
    assert environ["MEDRET_GROUP_SALT"] == TEST_GROUP_SALT
    assert environ["MEDRET_DATABASE_URL"] == grouped_env.database_url
    assert environ["MEDRET_ARCHIVE_ROOTS"] == str(grouped_env.archive_root.resolve())
    assert environ["PATH"] == os.environ["PATH"]
    # the database URL (and any password in it) is not in the arguments ps shows
    assert "--db" not in cmdline
    assert not any(grouped_env.database_url in part for part in cmdline)
    store = MetadataStore.open(grouped_env.database_url)
    try:
        fingerprint = store.get_collection("derm").group_salt_fingerprint
    finally:
        store.close()
    assert fingerprint == group_salt_fingerprint(TEST_GROUP_SALT)


def test_a_service_without_a_salt_refuses_a_reindex_and_still_serves(
    grouped_env: ServiceEnv, tmp_path: Path
) -> None:
    jobs_before = job_count(grouped_env)
    with (
        start_server(grouped_env, tmp_path / "server.log", MEDRET_GROUP_SALT="") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        refused = client.post(
            "/admin/reindex",
            json={"collection": "derm", "source": str(grouped_env.archive)},
            headers=ADMIN_AUTH,
        )
        detail = assert_json_answer(refused, {503})["detail"]
        assert detail.startswith("this service has no MEDRET_GROUP_SALT")
        assert "secrets.token_hex(32)" in detail
        image = (grouped_env.archive / "images" / "g0.png").read_bytes()
        answer = client.post("/query", files={"file": ("g0.png", image, "image/png")})
        assert assert_json_answer(answer, {200})["cases"]  # queries need no salt
        case_id = answer.json()["cases"][0]["case_id"]
        removal = client.delete(f"/admin/cases/{case_id}", headers=ADMIN_AUTH)  # nor removals
        assert wait_for_job(client, assert_json_answer(removal, {202})["job_id"])["state"] == (
            "succeeded"
        )
    assert job_count(grouped_env) == jobs_before + 1  # the removal's; no reindex job


def test_a_reindex_with_another_salt_than_the_collections_is_refused(
    grouped_env: ServiceEnv, tmp_path: Path
) -> None:
    jobs_before = job_count(grouped_env)
    with (
        start_server(
            grouped_env, tmp_path / "server.log", MEDRET_GROUP_SALT=OTHER_GROUP_SALT
        ) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        for mode in ("full", "add"):
            refused = client.post(
                "/admin/reindex",
                json={"collection": "derm", "source": str(grouped_env.archive), "mode": mode},
                headers=ADMIN_AUTH,
            )
            detail = assert_json_answer(refused, {409})["detail"]
            assert "holds patient/lesion keys hashed with another MEDRET_GROUP_SALT" in detail
            assert OTHER_GROUP_SALT not in detail
            assert TEST_GROUP_SALT not in detail
    assert job_count(grouped_env) == jobs_before


@pytest.mark.parametrize("salt", ["medret", "CHANGE_ME", "x" * 64])
def test_the_service_does_not_start_with_a_weak_salt(tmp_path: Path, salt: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    env |= {"MEDRET_DATA_DIR": str(tmp_path), "MEDRET_GROUP_SALT": salt}
    done = subprocess.run(
        [sys.executable, "-m", "medret", "serve"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("medret serve: bad configuration: MEDRET_GROUP_SALT:")
    assert "secrets.token_hex(32)" in line
    assert salt not in line.removeprefix("medret serve: ")  # the value is never echoed


def test_the_env_example_placeholder_is_refused_by_the_service() -> None:
    from app.settings import load_settings

    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    (placeholder,) = re.findall(r"^MEDRET_GROUP_SALT=(.*)$", example, re.M)
    with pytest.raises(ValueError, match="MEDRET_GROUP_SALT is too short"):
        load_settings(group_salt=placeholder)
    assert "secrets.token_hex(32)" in example
