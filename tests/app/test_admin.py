"""The admin API: reindex and removal jobs in real ``medret index`` processes, while the
service keeps answering queries from the version it has."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from support.checkpoints import make_checkpoint
from support.real_data import HAM_CODES, chest_subset, ham_subset
from support.service import ADMIN_AUTH, JOB_TIMEOUT_S, ServiceEnv, build_collection, wait_for_job


@pytest.fixture
def small_env(tmp_path: Path, shared_data: Path) -> ServiceEnv:
    """A collection "derm" of 28 HAM10000 images, in a database of its own."""
    archive_root = tmp_path / "archives"
    archive = ham_subset(shared_data, archive_root / "ham", per_class=4)
    checkpoint = make_checkpoint(archive_root / "derm.safetensors", HAM_CODES, size=64)
    url = f"sqlite:///{tmp_path / 'medret.db'}"
    build_collection(url, tmp_path / "data", "derm", checkpoint, archive)
    return ServiceEnv(tmp_path / "data", url, checkpoint, archive, archive_root)


@pytest.fixture
def admin_client(small_env: ServiceEnv) -> Iterator[TestClient]:
    app = create_app(small_env.settings())
    with TestClient(app) as client:
        yield client
        app.state.services.launcher.wait(JOB_TIMEOUT_S)  # no process outlives the test


def wait_for_version(client: TestClient, collection: str, version: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = client.get("/readyz").json()
        if ready["collections"].get(collection, {}).get("version") == version:
            return
        time.sleep(0.1)
    raise AssertionError(f"{collection} version {version} was not loaded: {ready}")


def post_query(client: TestClient, image: bytes, **params: object):
    return client.post("/query", params=params, files={"file": ("q", image)})


def test_reindex_swaps_versions_without_failing_a_query(
    admin_client: TestClient, small_env: ServiceEnv
) -> None:
    image = sorted((small_env.archive / "images").iterdir())[0].read_bytes()
    versions_seen: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def keep_querying() -> None:
        while not stop.is_set():
            response = post_query(admin_client, image, top_k=3)
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text}")
            else:
                body = response.json()
                versions_seen.append(body["index"]["version"])
                if body["cases"][0]["score"] < 0.999:  # one version: model and index agree
                    failures.append(f"mixed answer: {body['cases'][0]}")

    worker = threading.Thread(target=keep_querying)
    worker.start()
    try:
        started = admin_client.post(
            "/admin/reindex",
            json={"collection": "derm", "source": str(small_env.archive), "mode": "full"},
            headers=ADMIN_AUTH,
        )
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["state"] == "queued"
        assert job["status_url"] == f"/admin/jobs/{job['job_id']}"
        finished = wait_for_job(admin_client, job["job_id"])
        assert finished["state"] == "succeeded", finished
        assert finished["progress"] == 1.0
        assert finished["counts"]["vectors"] == 28
        assert finished["counts"]["updated"] == 28  # same content: same case ids
        wait_for_version(admin_client, "derm", 2)
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert not failures, failures[:3]
    assert versions_seen[0] == 1
    assert versions_seen[-1] == 2
    assert versions_seen == sorted(versions_seen)  # never back to the old version


def test_failed_build_keeps_the_old_version(
    admin_client: TestClient, small_env: ServiceEnv
) -> None:
    empty = small_env.archive_root / "empty"
    empty.mkdir()
    started = admin_client.post(
        "/admin/reindex",
        json={"collection": "derm", "source": str(empty), "layout": "image_folder"},
        headers=ADMIN_AUTH,
    )
    assert started.status_code == 202, started.text
    job = wait_for_job(admin_client, started.json()["job_id"])
    assert job["state"] == "failed"
    assert "no image files" in job["message"]  # the indexer's own words reach the admin
    image = sorted((small_env.archive / "images").iterdir())[0].read_bytes()
    answer = post_query(admin_client, image)
    assert answer.status_code == 200
    assert answer.json()["index"]["version"] == 1


def test_killed_build_is_failed_and_the_old_version_serves(
    admin_client: TestClient, small_env: ServiceEnv
) -> None:
    started = admin_client.post(
        "/admin/reindex",
        json={"collection": "derm", "source": str(small_env.archive)},
        headers=ADMIN_AUTH,
    )
    job_id = started.json()["job_id"]
    launcher = admin_client.app.state.services.launcher  # type: ignore[attr-defined]
    os.kill(launcher._children[job_id].process.pid, signal.SIGKILL)
    job = wait_for_job(admin_client, job_id)
    assert job["state"] == "failed"
    assert job["errors"]
    assert admin_client.get("/readyz").json()["collections"]["derm"]["version"] == 1
    # and a new job may start: the dead one no longer holds the collection
    again = admin_client.post(
        "/admin/reindex",
        json={"collection": "derm", "source": str(small_env.archive)},
        headers=ADMIN_AUTH,
    )
    assert again.status_code == 202
    assert wait_for_job(admin_client, again.json()["job_id"])["state"] == "succeeded"


def test_one_job_per_collection(admin_client: TestClient, small_env: ServiceEnv) -> None:
    body = {"collection": "derm", "source": str(small_env.archive), "mode": "add"}
    first = admin_client.post("/admin/reindex", json=body, headers=ADMIN_AUTH)
    assert first.status_code == 202
    second = admin_client.post("/admin/reindex", json=body, headers=ADMIN_AUTH)
    assert second.status_code == 409
    assert first.json()["job_id"] in second.json()["detail"]
    job = wait_for_job(admin_client, first.json()["job_id"])
    assert job["state"] == "succeeded"
    assert job["counts"]["added"] == 0  # --add: every image is already indexed


def test_delete_case_removes_it_everywhere(admin_client: TestClient, small_env: ServiceEnv) -> None:
    image = sorted((small_env.archive / "images").iterdir())[0].read_bytes()
    case_id = post_query(admin_client, image, top_k=1).json()["cases"][0]["case_id"]
    removal = admin_client.delete(f"/admin/cases/{case_id}", headers=ADMIN_AUTH)
    assert removal.status_code == 202, removal.text
    assert wait_for_job(admin_client, removal.json()["job_id"])["state"] == "succeeded"
    wait_for_version(admin_client, "derm", 2)
    assert admin_client.get(f"/cases/{case_id}").status_code == 404
    answer = post_query(admin_client, image, top_k=28).json()
    assert case_id not in [c["case_id"] for c in answer["cases"]]
    assert answer["index"]["size"] == 27
    assert admin_client.delete(f"/admin/cases/{case_id}", headers=ADMIN_AUTH).status_code == 404


def test_second_collection_multi_label(
    admin_client: TestClient, small_env: ServiceEnv, shared_data: Path
) -> None:
    chest = chest_subset(shared_data, small_env.archive_root / "cxr", count=30)
    from archives.label_sets import NIH_FINDINGS

    checkpoint = make_checkpoint(
        small_env.archive_root / "cxr.safetensors", tuple(NIH_FINDINGS), size=64, task="multi_label"
    )
    started = admin_client.post(
        "/admin/reindex",
        json={"collection": "cxr", "source": str(chest), "checkpoint": str(checkpoint)},
        headers=ADMIN_AUTH,
    )
    assert started.status_code == 202, started.text
    assert wait_for_job(admin_client, started.json()["job_id"])["state"] == "succeeded"
    wait_for_version(admin_client, "cxr", 1)
    xray = sorted((chest / "images").iterdir())[0].read_bytes()
    ambiguous = post_query(admin_client, xray)
    assert ambiguous.status_code == 400
    assert "cxr" in ambiguous.json()["detail"]
    assert "derm" in ambiguous.json()["detail"]
    body = post_query(admin_client, xray, collection="cxr").json()
    assert body["task"] == "multi_label"
    probs = [p["probability"] for p in body["predictions"]]
    assert len(probs) == 14
    assert sum(probs) > 1.5  # independent sigmoids (≈ 0.5 each untrained), not a softmax
    assert body["cases"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_admin_needs_the_token(admin_client: TestClient, small_env: ServiceEnv) -> None:
    body = {"collection": "derm", "source": str(small_env.archive)}
    missing = admin_client.post("/admin/reindex", json=body)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = admin_client.post("/admin/reindex", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert not list((small_env.data_dir / "jobs").glob("*.log"))  # nothing was started


@pytest.mark.parametrize(
    ("source", "status"),
    [("relative/path", 400), ("/etc", 403), ("{root}/../../etc", 403), ("{root}/missing", 400)],
)
def test_reindex_sources_are_confined(
    admin_client: TestClient, small_env: ServiceEnv, source: str, status: int
) -> None:
    response = admin_client.post(
        "/admin/reindex",
        json={"collection": "derm", "source": source.format(root=small_env.archive_root)},
        headers=ADMIN_AUTH,
    )
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert not (small_env.data_dir / "jobs").exists() or not list(
        (small_env.data_dir / "jobs").iterdir()
    )


def test_unresolvable_sources_and_odd_names_are_400(
    admin_client: TestClient, small_env: ServiceEnv
) -> None:
    loop = small_env.archive_root / "loop"
    loop.symlink_to(loop)  # a link to itself: resolving it fails
    too_long = str(small_env.archive_root / ("a" * 300))
    for body in (
        {"collection": "derm", "source": str(loop / "x")},
        {"collection": "derm", "source": too_long},
        {"collection": "derm\n", "source": str(small_env.archive)},
    ):
        response = admin_client.post("/admin/reindex", json=body, headers=ADMIN_AUTH)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["detail"]
