"""No identifier of a label table leaves the archive: a labels.csv with every column the
DICOM PS3.15 basic profile and HIPAA Safe Harbor name, each cell a marker, is indexed by
``medret index`` and by a reindex job of a live server (whose allowlist adds a column),
queried and read back; no marker reaches SQL, a log, the command's output,
``/cases/{id}`` or ``/query``."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.checkpoints import make_checkpoint
from support.identifiers import (
    CLASSES,
    CLINICAL_VALUES,
    EXTENSION_VALUES,
    IDENTIFIER_COLUMNS,
    IdentifierManifest,
    make_identifier_manifest,
)
from support.server import start_server
from support.service import ADMIN_AUTH, ServiceEnv, wait_for_job

IMAGES = 16


def test_no_identifier_reaches_sql_logs_or_answers(tmp_path: Path) -> None:
    archive_root = tmp_path / "archives"
    made = make_identifier_manifest(archive_root / "phi", images=IMAGES)
    checkpoint = make_checkpoint(archive_root / "model.safetensors", CLASSES, size=32)
    data_dir = tmp_path / "data"
    url = f"sqlite:///{tmp_path / 'medret.db'}"
    salt = secrets.token_hex(32)
    env = ServiceEnv(data_dir, url, checkpoint, made.root, archive_root)

    indexed = _medret_index(env, salt)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    summary = json.loads(indexed.stdout)
    assert summary["added"] == IMAGES
    # named, never their values; the extension column too, without the setting
    assert summary["dropped_columns"] == [*IDENTIFIER_COLUMNS, *EXTENSION_VALUES]
    outputs = {"medret index output": indexed.stdout + indexed.stderr}

    log_path = tmp_path / "server.log"
    variables = {"MEDRET_GROUP_SALT": salt, "MEDRET_LOG_LEVEL": "DEBUG"}
    variables["MEDRET_METADATA_ALLOWLIST"] = ",".join(EXTENSION_VALUES)
    with (
        start_server(env, log_path, **variables) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        image = (made.root / "images" / "img_03.png").read_bytes()
        answer = client.post("/query", params={"top_k": IMAGES}, files={"file": ("q", image)})
        assert answer.status_code == 200, answer.text
        outputs["/query"] = answer.text
        cases = answer.json()["cases"]
        assert len(cases) == IMAGES
        assert all(case["metadata"] == CLINICAL_VALUES for case in cases)
        for case in cases:
            record = client.get(f"/cases/{case['case_id']}")
            assert record.status_code == 200, record.text
            assert record.json()["metadata"] == CLINICAL_VALUES
            outputs[f"/cases/{case['case_id']}"] = record.text
        job = _reindex(client, made)  # in a process of the server's, with its allowlist
        assert job["state"] == "succeeded", job
        assert job["counts"]["dropped_columns"] == list(IDENTIFIER_COLUMNS)
        record = client.get(f"/cases/{cases[0]['case_id']}")
        assert record.json()["metadata"] == CLINICAL_VALUES | EXTENSION_VALUES
        outputs["/cases after the reindex"] = record.text
        outputs["/admin/jobs"] = json.dumps(job)
        outputs["job log"] = (data_dir / "jobs" / f"{job['job_id']}.log").read_text()
    outputs["server log"] = log_path.read_text()
    outputs["SQL"] = _dump_database(tmp_path / "medret.db")
    assert "group_key_hash" in outputs["SQL"]  # the dump is of the real tables

    leaks = {
        where: [marker for marker in made.markers if marker.lower() in text.lower()]
        for where, text in outputs.items()
    }
    assert {where: found[:5] for where, found in leaks.items() if found} == {}


def _medret_index(env: ServiceEnv, salt: str) -> subprocess.CompletedProcess[str]:
    """``medret -v index`` of the archive, as an operator runs it."""
    options = {
        "--collection": "phi",
        "--checkpoint": str(env.checkpoint),
        "--source": str(env.archive),
        "--data-dir": str(env.data_dir),
        "--db": env.database_url,
        "--workers": "0",
    }
    return _medret(["-v", "index", *itertools.chain(*options.items())], MEDRET_GROUP_SALT=salt)


def _medret(arguments: list[str], **variables: str) -> subprocess.CompletedProcess[str]:
    """``medret`` with exactly these MEDRET_* variables (not those of the test process)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    return subprocess.run(
        [sys.executable, "-m", "medret", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**inherited, **variables},
    )


def _reindex(client: httpx.Client, made: IdentifierManifest) -> dict[str, Any]:
    """A full reindex through the admin API (a ``medret index`` process of the server)."""
    started = client.post(
        "/admin/reindex",
        json={"collection": "phi", "source": str(made.root), "mode": "full"},
        headers=ADMIN_AUTH,
    )
    assert started.status_code == 202, started.text
    return wait_for_job(client, started.json()["job_id"])


def _dump_database(path: Path) -> str:
    """Every row of every table of the SQLite database, as text."""
    with sqlite3.connect(path) as connection:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        lines = []
        for table in tables:
            columns = [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]
            lines.append(f"{table}: {', '.join(columns)}")
            lines += [repr(row) for row in connection.execute(f'SELECT * FROM "{table}"')]
    return "\n".join(lines)


@pytest.mark.parametrize("command", ["serve", "index"])
def test_an_allowlist_naming_an_identifier_stops_the_commands(command: str, tmp_path: Path) -> None:
    made = make_identifier_manifest(tmp_path / "phi", images=2, patients=1)
    checkpoint = make_checkpoint(tmp_path / "model.safetensors", CLASSES, size=32)
    build = {"--checkpoint": str(checkpoint), "--source": str(made.root), "--workers": "0"}
    arguments = {
        "serve": ["serve"],
        "index": ["index", "--collection", "phi", *itertools.chain(*build.items())],
    }[command]
    ran = _medret(
        arguments,
        MEDRET_DATA_DIR=str(tmp_path / "data"),
        MEDRET_GROUP_SALT=secrets.token_hex(32),
        MEDRET_METADATA_ALLOWLIST="scanner_model,patient_dob",
    )
    assert ran.returncode != 0
    assert "MEDRET_METADATA_ALLOWLIST names 'patient_dob'" in ran.stderr, ran.stderr[-2000:]
    assert "Traceback" not in ran.stderr
