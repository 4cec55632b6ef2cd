"""What a service under test serves: a data folder with a collection built by the real
indexer, and the settings (with the test admin token) that point at it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.settings import Settings
from indexer.builder import IndexBuilder, IndexerConfig
from indexer.store import MetadataStore
from support.group_salt import TEST_GROUP_SALT

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}  # headers of an admin request
JOB_TIMEOUT_S = 180


def wait_for_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """The admin job's record once it has succeeded or failed (AssertionError after
    :data:`JOB_TIMEOUT_S`)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/admin/jobs/{job_id}", headers=ADMIN_AUTH).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {JOB_TIMEOUT_S} s")


def build_collection(
    url: str, data_dir: Path, name: str, checkpoint: Path, source: Path, layout: str = "auto"
) -> None:
    """Index ``source`` into collection ``name`` with the real indexer."""
    store = MetadataStore.open(url)
    try:
        builder = IndexBuilder(
            store,
            IndexerConfig(
                data_dir=data_dir,
                group_salt=TEST_GROUP_SALT,
                workers=0,
                progress=False,
                batch_size=32,
            ),
        )
        builder.build(name, checkpoint, source, layout=layout)
    finally:
        store.close()


@dataclass(frozen=True)
class ServiceEnv:
    data_dir: Path
    database_url: str
    checkpoint: Path
    archive: Path
    archive_root: Path

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": self.data_dir,
            "database_url": self.database_url,
            "admin_token": ADMIN_TOKEN,
            "group_salt": TEST_GROUP_SALT,
            "archive_roots": [str(self.archive_root)],
            "reload_interval_s": 0.2,
            "index_workers": 0,
            **overrides,
        }
        return Settings(**values)  # type: ignore[arg-type]
