"""The real Orthanc the PACS tests start (tests/support/orthanc.py) does what they rely on.

STOW-RS stores, QIDO-RS lists, WADO-RS returns the stored bytes; the data outlive a
restart; a paused server stops answering and a resumed one answers again; with
credentials an anonymous request is refused; what STOW refuses is an error naming why.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imaging.decode import decode_image
from imaging.errors import DecodeErrorKind, ImageDecodeError
from support.orthanc import Orthanc, require_orthanc
from support.pacs_instances import MARKERS, corrupt_instance, make_instances, uids_of

SOP_INSTANCE_UID = "00080018"
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, list[bytes]]]:
    """One server holding five instances in two studies, stored with STOW-RS."""
    require_orthanc()
    instances = make_instances(5, seed=3)
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        server.stow(instances)
        yield server, instances


def test_qido_lists_what_stow_stored(stored: tuple[Orthanc, list[bytes]]) -> None:
    server, instances = stored
    with server.client() as client:
        listed = client.get("/dicom-web/instances", headers={"Accept": "application/dicom+json"})
    assert listed.status_code == 200
    assert sorted(item[SOP_INSTANCE_UID]["Value"][0] for item in listed.json()) == sorted(
        uids_of(data)[2] for data in instances
    )
    assert server.count_instances() == 5
    assert len({uids_of(data)[0] for data in instances}) == 2


def test_qido_honours_limit_and_offset(stored: tuple[Orthanc, list[bytes]]) -> None:
    server, _ = stored
    with server.client() as client:
        everything = [
            i[SOP_INSTANCE_UID]["Value"][0] for i in client.get("/dicom-web/instances").json()
        ]
        page = client.get("/dicom-web/instances", params={"limit": 2, "offset": 2}).json()
    assert [i[SOP_INSTANCE_UID]["Value"][0] for i in page] == everything[2:4]


def test_wado_returns_the_stored_bytes(stored: tuple[Orthanc, list[bytes]]) -> None:
    server, instances = stored
    study, series, sop = uids_of(instances[1])
    with server.client() as client:
        response = client.get(
            f"/dicom-web/studies/{study}/series/{series}/instances/{sop}",
            headers={"Accept": DICOM_MULTIPART},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(DICOM_MULTIPART)
    assert response.content.count(instances[1]) == 1
    assert all(other not in response.content for other in instances if other != instances[1])


def test_instances_carry_the_patient_markers(stored: tuple[Orthanc, list[bytes]]) -> None:
    server, _ = stored
    with server.client() as client:
        (first, *_) = client.get("/instances").json()
        tags = client.get(f"/instances/{first}/simplified-tags").json()
    assert (tags["PatientName"], tags["PatientID"], tags["PatientBirthDate"]) == MARKERS


def test_data_outlive_a_restart_and_a_kill(tmp_path: Path) -> None:
    require_orthanc()
    with Orthanc(tmp_path) as server:
        server.stow(make_instances(3, seed=4))
        port = server.port
        server.stop()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/system", timeout=1)
        server.start()
        assert (server.port, server.count_instances()) == (port, 3)
        server.kill()
        server.start()
        assert server.count_instances() == 3


def test_a_paused_server_times_out_then_answers_again(tmp_path: Path) -> None:
    require_orthanc()
    with Orthanc(tmp_path) as server:
        server.pause()
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{server.url}/system", timeout=1)
        server.resume()
        assert httpx.get(f"{server.url}/system", timeout=5).status_code == 200
        server.pause()  # left paused: leaving the block must still stop it


def test_credentials_are_required_when_given(tmp_path: Path) -> None:
    require_orthanc()
    with Orthanc(tmp_path, credentials=("reader", "pa55word")) as server:
        assert server.auth == ("reader", "pa55word")
        assert httpx.get(f"{server.dicomweb_url}/instances").status_code == 401
        wrong = httpx.get(f"{server.dicomweb_url}/instances", auth=("reader", "nope"))
        assert wrong.status_code == 401
        server.stow(make_instances(2, seed=5))
        assert server.count_instances() == 2
        assert server.source == f"dicomweb+{server.url}/dicom-web"


def test_a_corrupt_instance_is_stored_but_does_not_decode(tmp_path: Path) -> None:
    require_orthanc()
    broken = corrupt_instance()
    with pytest.raises(ImageDecodeError) as raised:
        decode_image(broken)
    assert raised.value.kind is DecodeErrorKind.CORRUPT
    with Orthanc(tmp_path) as server:
        server.stow([broken])
        assert server.store_rest(broken)["Status"] == "AlreadyStored"
        assert server.count_instances() == 1


def test_stow_of_a_non_dicom_body_raises_with_the_answer(tmp_path: Path) -> None:
    require_orthanc()
    with Orthanc(tmp_path) as server:
        with pytest.raises(RuntimeError, match=r"STOW-RS failed \(400\)"):
            server.stow([b"not a DICOM file"])
        with pytest.raises(RuntimeError, match=r"POST /instances failed"):
            server.store_rest(b"not a DICOM file")
        assert server.count_instances() == 0


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    require_orthanc()
    server = Orthanc(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))
        taken.listen()
        with pytest.raises(RuntimeError, match="Orthanc exited"):
            server.start()
