"""``/admin/follow`` on a live service: a follower it starts makes a newly stored PACS
instance answer the next queries, it refuses a second follower and another PACS, and
DELETE stops it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.checkpoints import make_checkpoint
from support.orthanc import Orthanc, free_port, require_orthanc
from support.pacs_instances import make_instances, uids_of
from support.server import LiveServer, start_server
from support.service import ADMIN_AUTH, ServiceEnv, build_collection

COLLECTION = "pacs"


@dataclass
class Setup:
    orthanc: Orthanc
    server: LiveServer
    follower_log: Path
    client: httpx.Client


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_orthanc()
    root = tmp_path_factory.mktemp("follow-service")
    archive = root / "archive"
    archive.mkdir()
    checkpoint = make_checkpoint(archive / "model.safetensors", ("NORMAL", "PNEUMONIA"))
    data_dir = root / "data"
    url = f"sqlite:///{data_dir / 'medret.db'}"
    with Orthanc(root / "orthanc") as orthanc:
        orthanc.stow(make_instances(4, seed=71))
        build_collection(url, data_dir, COLLECTION, checkpoint, orthanc.source)  # type: ignore[arg-type]
        env = ServiceEnv(data_dir, url, checkpoint, archive, archive)
        with (
            start_server(
                env, root / "server.log", MEDRET_DICOMWEB_URL=orthanc.dicomweb_url
            ) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            yield Setup(orthanc, server, data_dir / "followers" / f"{COLLECTION}.log", client)


def top_instance(client: httpx.Client, data: bytes) -> str | None:
    response = client.post("/query", files={"file": ("q.dcm", data)}, params={"k": 1})
    assert response.status_code == 200, response.text
    dicom = response.json()["cases"][0]["dicom"]
    return None if dicom is None else str(dicom["instance_uid"])


def test_a_started_follower_makes_a_new_instance_answer_and_delete_stops_it(
    setup: Setup, record_property: Callable[[str, object], None]
) -> None:
    client = setup.client
    body = {"collection": COLLECTION, "source": setup.orthanc.source}
    started = client.post("/admin/follow", json=body, headers=ADMIN_AUTH)
    assert started.status_code == 201, started.text
    pid = started.json()["pid"]
    listed = client.get("/admin/follow", headers=ADMIN_AUTH).json()
    assert [(f["collection"], f["source"], f["pid"]) for f in listed] == [
        (COLLECTION, setup.orthanc.source, pid)
    ]
    again = client.post("/admin/follow", json=body, headers=ADMIN_AUTH)
    assert again.status_code == 409
    assert "already runs" in again.json()["detail"]

    new = make_instances(1, seed=72)[0]
    sop = uids_of(new)[2]
    assert top_instance(client, new) != sop
    stowed = time.monotonic()
    setup.orthanc.stow([new])
    deadline = stowed + 30
    while top_instance(client, new) != sop:
        assert time.monotonic() < deadline, setup.follower_log.read_text(errors="replace")[-3000:]
        time.sleep(0.1)
    record_property("stow_to_searchable_s", round(time.monotonic() - stowed, 2))

    stopped = client.delete(f"/admin/follow/{COLLECTION}", headers=ADMIN_AUTH)
    assert stopped.status_code == 204
    assert client.get("/admin/follow", headers=ADMIN_AUTH).json() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert client.delete(f"/admin/follow/{COLLECTION}", headers=ADMIN_AUTH).status_code == 404


def test_a_source_off_the_configured_pacs_is_refused(setup: Setup) -> None:
    other = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"
    answer = setup.client.post(
        "/admin/follow", json={"collection": COLLECTION, "source": other}, headers=ADMIN_AUTH
    )
    assert answer.status_code == 403
    assert "MEDRET_DICOMWEB_URL" in answer.json()["detail"]
    folder = setup.client.post(
        "/admin/follow", json={"collection": COLLECTION, "source": "/tmp"}, headers=ADMIN_AUTH
    )
    assert folder.status_code == 400
    assert setup.client.get("/admin/follow", headers=ADMIN_AUTH).json() == []
