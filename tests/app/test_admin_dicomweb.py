"""``POST /admin/reindex`` from a PACS: a job reads the configured PACS (credentials from
the service's environment, never the request), and no other server."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.jobs import job_environment
from app.main import create_app
from indexer.store import MetadataStore
from support.checkpoints import make_checkpoint
from support.orthanc import Orthanc
from support.pacs_instances import make_instances, uids_of
from support.service import ADMIN_AUTH, JOB_TIMEOUT_S, ServiceEnv, wait_for_job


@pytest.fixture
def env(tmp_path: Path) -> ServiceEnv:
    root = tmp_path / "archives"
    root.mkdir()
    checkpoint = make_checkpoint(root / "cxr.safetensors", ("a", "b"))
    return ServiceEnv(
        tmp_path / "data", f"sqlite:///{tmp_path / 'medret.db'}", checkpoint, root, root
    )


def client_for(env: ServiceEnv, **settings: object) -> TestClient:
    return TestClient(create_app(env.settings(**settings)))


def test_a_reindex_job_indexes_the_configured_pacs_and_adds_to_it(
    pacs: Orthanc, env: ServiceEnv
) -> None:
    first = make_instances(5, seed=21)
    pacs.stow(first)
    with client_for(env, dicomweb_url=pacs.dicomweb_url) as client:
        body = {"collection": "cxr", "source": pacs.source, "checkpoint": str(env.checkpoint)}
        started = client.post("/admin/reindex", json=body, headers=ADMIN_AUTH)
        assert started.status_code == 202, started.text
        job = wait_for_job(client, started.json()["job_id"])
        assert job["state"] == "succeeded", job
        assert job["counts"]["added"] == 5
        later = make_instances(2, seed=22)
        pacs.stow(later)
        added = client.post("/admin/reindex", json={**body, "mode": "add"}, headers=ADMIN_AUTH)
        job = wait_for_job(client, added.json()["job_id"])
        assert (job["state"], job["counts"]["added"], job["counts"]["skipped_known"]) == (
            "succeeded",
            2,
            5,
        )
        client.app.state.services.launcher.wait(JOB_TIMEOUT_S)
    store = MetadataStore.open(env.database_url)
    try:
        coll = store.get_collection("cxr")
        assert set(store.external_ids(coll.id)) == {uids_of(d)[2] for d in first + later}
    finally:
        store.close()


@pytest.mark.parametrize(
    ("configured", "source"),
    [
        (None, "dicomweb+http://127.0.0.1:8042/dicom-web"),
        ("http://127.0.0.1:8042/dicom-web", "dicomweb+http://10.0.0.9:8042/dicom-web"),
        ("http://127.0.0.1:8042/dicom-web", "dicomweb+http://127.0.0.1:8043/dicom-web"),
        ("http://127.0.0.1:8042/dicom-web", "dicomweb+http://127.0.0.1:8042/dicom-webx"),
    ],
)
def test_no_other_server_than_the_configured_pacs_is_read(
    env: ServiceEnv, configured: str | None, source: str
) -> None:
    with client_for(env, dicomweb_url=configured) as client:
        body = {"collection": "cxr", "source": source, "checkpoint": str(env.checkpoint)}
        response = client.post("/admin/reindex", json=body, headers=ADMIN_AUTH)
    assert response.status_code == 403, response.text
    assert "MEDRET_DICOMWEB_URL" in response.json()["detail"]
    assert not (env.data_dir / "jobs").exists()


def test_a_source_with_credentials_in_it_is_400(env: ServiceEnv) -> None:
    with client_for(env, dicomweb_url="http://127.0.0.1:8042/dicom-web") as client:
        body = {"collection": "cxr", "source": "dicomweb+http://u:pw@127.0.0.1:8042/dicom-web"}
        response = client.post("/admin/reindex", json=body, headers=ADMIN_AUTH)
    assert response.status_code == 400
    assert "pw" not in response.json()["detail"].replace("password", "")


def test_jobs_inherit_how_to_reach_the_pacs_and_nothing_else(env: ServiceEnv) -> None:
    settings = env.settings(dicomweb_url="http://pacs:8042/dicom-web/")
    parent = {
        "MEDRET_DICOMWEB_USERNAME": "reader",
        "MEDRET_DICOMWEB_PASSWORD": "pw",
        "MEDRET_DICOMWEB_CA_BUNDLE": "/etc/ssl/pacs.pem",
        "MEDRET_ADMIN_TOKEN": "not-for-jobs",
        "SOMETHING_ELSE": "x",
    }
    child = job_environment(settings, parent)
    assert child["MEDRET_DICOMWEB_URL"] == "http://pacs:8042/dicom-web"
    assert child["MEDRET_DICOMWEB_USERNAME"] == "reader"
    assert child["MEDRET_DICOMWEB_PASSWORD"] == "pw"
    assert child["MEDRET_DICOMWEB_CA_BUNDLE"] == "/etc/ssl/pacs.pem"
    assert "MEDRET_ADMIN_TOKEN" not in child
    assert "SOMETHING_ELSE" not in child
