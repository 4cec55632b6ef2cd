"""``POST /query`` by the UIDs of an instance in a real Orthanc, the links from a PACS case
back to its UIDs and the viewer, and what the service answers when the PACS fails.

The collection is indexed from the Orthanc with the real indexer; half of its instances
are named by a label table, the others are unlabelled cases.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from indexer.builder import IndexBuilder, IndexerConfig
from indexer.store import MetadataStore
from support.checkpoints import make_checkpoint
from support.group_salt import TEST_GROUP_SALT
from support.orthanc import Orthanc, require_orthanc
from support.pacs_instances import MARKERS, make_instances, uids_of
from support.server import LiveServer, start_server
from support.service import ServiceEnv

INSTANCES = 8
LABELLED = 4  # the first four instances are in the label table
VIEWER = "https://viewer.example/viewer?StudyInstanceUIDs={study_uid}&SOP={instance_uid}"


@pytest.fixture(scope="module")
def instances() -> list[bytes]:
    return make_instances(INSTANCES, seed=131)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, instances: list[bytes]) -> Iterator[Orthanc]:
    require_orthanc()
    with Orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        server.stow(instances)
        yield server


@pytest.fixture(scope="module")
def pacs_env(
    tmp_path_factory: pytest.TempPathFactory, orthanc: Orthanc, instances: list[bytes]
) -> ServiceEnv:
    root = tmp_path_factory.mktemp("pacs-service")
    labels = root / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["SOPInstanceUID", "label"])
        for index, data in enumerate(instances[:LABELLED]):
            writer.writerow([uids_of(data)[2], "nor" if index % 2 else "abn"])
    checkpoint = make_checkpoint(root / "cr.safetensors", ("abn", "nor"), size=32)
    data_dir, url = root / "data", f"sqlite:///{root / 'medret.db'}"
    store = MetadataStore.open(url)
    try:
        config = IndexerConfig(
            data_dir=data_dir, group_salt=TEST_GROUP_SALT, workers=0, progress=False
        )
        IndexBuilder(store, config).build("pacs", checkpoint, orthanc.source, labels=labels)
    finally:
        store.close()
    return ServiceEnv(data_dir, url, checkpoint, root, root)


@pytest.fixture(scope="module")
def client(pacs_env: ServiceEnv, orthanc: Orthanc) -> Iterator[TestClient]:
    settings = pacs_env.settings(dicomweb_url=orthanc.dicomweb_url, viewer_url_template=VIEWER)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def live(
    pacs_env: ServiceEnv, orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A real server whose PACS client gives up after 1 s and does not retry."""
    log_path = tmp_path_factory.mktemp("pacs-live") / "server.log"
    server: LiveServer
    with (
        start_server(
            pacs_env,
            log_path,
            MEDRET_DICOMWEB_URL=orthanc.dicomweb_url,
            MEDRET_DICOMWEB_TIMEOUT_S="1",
            MEDRET_DICOMWEB_RETRIES="0",
        ) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        yield http


def uid_fields(data: bytes) -> dict[str, str]:
    study, series, sop = uids_of(data)
    return {"study_uid": study, "series_uid": series, "instance_uid": sop}


def same_answer(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert [p["code"] for p in a["predictions"]] == [p["code"] for p in b["predictions"]]
    for pa, pb in zip(a["predictions"], b["predictions"], strict=True):
        assert pa["probability"] == pytest.approx(pb["probability"], abs=1e-6)
    assert [c["case_id"] for c in a["cases"]] == [c["case_id"] for c in b["cases"]]
    for ca, cb in zip(a["cases"], b["cases"], strict=True):
        assert ca["score"] == pytest.approx(cb["score"], abs=1e-6)
    assert a["knn_vote"] == b["knn_vote"]
    assert a["query"] == b["query"]


# --------------------------------------------------------------------------- the answers


def test_query_by_uids_answers_as_the_upload_of_the_same_file(
    client: TestClient, instances: list[bytes]
) -> None:
    data = instances[5]
    upload = client.post("/query?top_k=5", files={"file": ("x.dcm", data)})
    assert upload.status_code == 200, upload.text
    by_form = client.post("/query?top_k=5", data=uid_fields(data))
    assert by_form.status_code == 200, by_form.text
    by_json = client.post("/query", json={**uid_fields(data), "top_k": 5})
    assert by_json.status_code == 200, by_json.text
    same_answer(by_form.json(), upload.json())
    same_answer(by_json.json(), upload.json())
    assert len(by_json.json()["cases"]) == 5
    # the instance itself is indexed: it is its own nearest case
    top = by_json.json()["cases"][0]
    assert top["dicom"] == uid_fields(data)
    assert top["score"] == pytest.approx(1.0, abs=1e-4)


def test_cases_carry_uids_and_viewer_link_and_no_patient_markers(
    client: TestClient, instances: list[bytes]
) -> None:
    answer = client.post("/query", json={**uid_fields(instances[0]), "top_k": INSTANCES})
    assert answer.status_code == 200, answer.text
    known = {uids_of(data)[2]: uid_fields(data) for data in instances}
    for case in answer.json()["cases"]:
        dicom = case["dicom"]
        assert dicom == known[dicom["instance_uid"]]
        assert case["viewer_url"] == VIEWER.format(**dicom)
        record = client.get(f"/cases/{case['case_id']}")
        assert record.status_code == 200
        assert record.json()["dicom"] == dicom
        assert record.json()["viewer_url"] == case["viewer_url"]
        assert record.json()["labelled"] is case["labelled"]
        for marker in MARKERS:
            assert marker not in record.text
    for marker in MARKERS:
        assert marker not in answer.text


def test_without_a_viewer_template_there_is_no_viewer_url(
    pacs_env: ServiceEnv, orthanc: Orthanc, instances: list[bytes]
) -> None:
    settings = pacs_env.settings(dicomweb_url=orthanc.dicomweb_url)
    with TestClient(create_app(settings)) as plain:
        answer = plain.post("/query", data=uid_fields(instances[1]))
        assert answer.status_code == 200, answer.text
        cases = answer.json()["cases"]
        assert cases
        assert all(c["viewer_url"] is None and c["dicom"] for c in cases)
        case = plain.get(f"/cases/{cases[0]['case_id']}").json()
        assert case["viewer_url"] is None
        assert case["dicom"] == cases[0]["dicom"]


def test_unlabelled_cases_are_left_out_of_the_vote(
    client: TestClient, instances: list[bytes]
) -> None:
    answer = client.post("/query", json={**uid_fields(instances[2]), "top_k": INSTANCES}).json()
    cases = answer["cases"]
    assert len(cases) == INSTANCES
    unlabelled = [c for c in cases if not c["labelled"]]
    assert len(unlabelled) == INSTANCES - LABELLED
    assert all(c["labels"] == [] for c in unlabelled)
    assert all(len(c["labels"]) == 1 for c in cases if c["labelled"])
    assert answer["knn_vote_basis"] == {
        "labelled_cases": LABELLED,
        "unlabelled_cases": INSTANCES - LABELLED,
    }
    assert sum(v["count"] for v in answer["knn_vote"]) == LABELLED
    assert sum(v["fraction"] for v in answer["knn_vote"]) == pytest.approx(1.0)


def test_the_explain_route_takes_uids_too(client: TestClient, instances: list[bytes]) -> None:
    data = instances[3]
    hit = client.post("/query", data=uid_fields(data)).json()["cases"][1]
    by_json = client.post(f"/explain?case_id={hit['case_id']}", json=uid_fields(data))
    assert by_json.status_code == 200, by_json.text
    upload = client.post(f"/explain?case_id={hit['case_id']}", files={"file": ("x", data)})
    assert by_json.json()["score"] == pytest.approx(upload.json()["score"], abs=1e-5)


# --------------------------------------------------------------------------- bad requests


def detail(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["request_id"]
    return str(body["detail"])


def test_unknown_uids_are_404(client: TestClient, instances: list[bytes]) -> None:
    fields = {**uid_fields(instances[0]), "instance_uid": "1.2.3.4.5.6.7.8.9"}
    assert "no instance" in detail(client.post("/query", json=fields), 404)
    assert "no instance" in detail(client.post("/query", data=fields), 404)


@pytest.mark.parametrize(
    "change",
    [
        {"study_uid": "1.2.abc"},
        {"series_uid": "1." * 40 + "1"},
        {"instance_uid": ""},  # with the other two: only some UIDs
        {"series_uid": "..1"},
    ],
)
def test_malformed_or_partial_uids_are_422(
    client: TestClient, instances: list[bytes], change: dict[str, str]
) -> None:
    fields = {**uid_fields(instances[0]), **change}
    for response in (client.post("/query", data=fields), client.post("/query", json=fields)):
        assert response.status_code == 422, response.text
        assert "UID" in response.json()["detail"] or "uid" in response.json()["detail"]


def test_a_file_and_uids_together_are_422(client: TestClient, instances: list[bytes]) -> None:
    response = client.post(
        "/query", data=uid_fields(instances[0]), files={"file": ("x.dcm", instances[0])}
    )
    assert "not both" in detail(response, 422)


def test_a_parameter_in_both_the_url_and_the_json_body_is_422(
    client: TestClient, instances: list[bytes]
) -> None:
    response = client.post("/query?top_k=3", json={**uid_fields(instances[0]), "top_k": 4})
    assert "top_k" in detail(response, 422)
    response = client.post("/query", json={**uid_fields(instances[0]), "top_k": 500})
    assert "top_k" in detail(response, 422)


def test_no_pacs_configured_is_400(pacs_env: ServiceEnv, instances: list[bytes]) -> None:
    with TestClient(create_app(pacs_env.settings())) as no_pacs:
        response = no_pacs.post("/query", json=uid_fields(instances[0]))
        assert "MEDRET_DICOMWEB_URL" in detail(response, 400)
        response = no_pacs.post("/query")
        assert "file" in detail(response, 400)


# --------------------------------------------------------------------------- a failing PACS


def test_a_paused_pacs_is_504_and_a_stopped_one_502(
    live: httpx.Client, orthanc: Orthanc, instances: list[bytes]
) -> None:
    fields = uid_fields(instances[4])
    working = live.post("/query", json=fields)
    assert working.status_code == 200, working.text
    case_id = working.json()["cases"][0]["case_id"]
    orthanc.pause()
    try:
        assert "in time" in detail(live.post("/query", json=fields), 504)
        assert "in time" in detail(live.get(f"/cases/{case_id}/image"), 504)
    finally:
        orthanc.resume()
    assert live.post("/query", data=fields).status_code == 200
    orthanc.stop()
    try:
        assert "unavailable" in detail(live.post("/query", data=fields), 502)
        assert "unavailable" in detail(live.get(f"/cases/{case_id}/image"), 502)
        assert "unavailable" in detail(live.get(f"/cases/{case_id}/thumbnail"), 502)
        record = live.get(f"/cases/{case_id}")  # the record itself is in SQL
        assert record.status_code == 200
        assert record.json()["dicom"] == fields
    finally:
        orthanc.start()
    image = live.get(f"/cases/{case_id}/image")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
