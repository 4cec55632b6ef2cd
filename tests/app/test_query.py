"""POST /query and the case routes through the test client (lifespan included)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from archives.registry import read_archive
from indexer.calibration import MatchCalibration
from indexer.embedding import embed_samples
from indexer.store import MetadataStore
from indexer.vectors.index import stored_scores
from indexer.vectors.persistence import load_vectors
from model.checkpoint import load_checkpoint
from support.dicom import dicom_bytes
from support.images import encode
from support.real_data import HAM_CODES, HAM_NAMES
from support.service import ServiceEnv


def query(client: TestClient, data: bytes, **params: object) -> dict:
    response = client.post("/query", params=params, files={"file": ("upload", data)})
    assert response.status_code == 200, response.text
    return response.json()


def test_answer_holds_the_contract(client: TestClient, ham_image: bytes) -> None:
    body = query(client, ham_image, top_k=5)
    assert body["task"] == "single_label"
    assert body["model"]["checkpoint_sha256"]
    assert body["model"]["name"].startswith("vit-tiny")
    index = body["index"]
    calibration = index.pop("match_calibration")
    assert (index.pop("label_weight"), index.pop("ranking")) == (0.0, "centred cosine")
    assert index == {
        "collection": "derm", "version": 1, "size": 280, "factory": "Flat", "centred": True
    }  # fmt: skip
    assert calibration["labelled_cases"] == 280
    assert calibration["rule"] == "the same label"
    assert calibration["reads"] == "raw cosine"
    assert calibration["queries_from"] in ("held-out cases", "all labelled cases")
    predictions = body["predictions"]
    assert {p["code"] for p in predictions} == set(HAM_CODES)
    assert all(p["name"] == HAM_NAMES[p["code"]] for p in predictions)
    probs = [p["probability"] for p in predictions]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-5)  # softmax for one-label data
    cases = body["cases"]
    assert [c["rank"] for c in cases] == [1, 2, 3, 4, 5]
    scores = [c["score"] for c in cases]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(1.0, abs=1e-4)  # the image itself is indexed
    first = cases[0]
    assert first["image_url"] == f"/cases/{first['case_id']}/image"
    assert first["labels"][0]["name"] == HAM_NAMES[first["labels"][0]["code"]]
    vote = body["knn_vote"]
    assert sum(v["count"] for v in vote) == 5
    assert sum(v["fraction"] for v in vote) == pytest.approx(1.0)
    assert body["out_of_distribution"]["flagged"] is False
    timings = body["timings"]
    assert timings["total_ms"] >= timings["decode_ms"] + timings["embed_ms"]
    assert body["query"] == {"format": "JPEG", "width": 224, "height": 224, "preview": None}
    assert body["request_id"]


def active_folder(service_env: ServiceEnv) -> Path:
    store = MetadataStore.open(service_env.database_url)
    try:
        return Path(store.active_version(store.get_collection("derm").id).path)
    finally:
        store.close()


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def query_embedding(service_env: ServiceEnv, image: bytes, folder: Path) -> np.ndarray:
    """The model's raw unit embedding of ``image``, by the indexer's inference path."""
    folder.mkdir(parents=True)
    (folder / "query.jpg").write_bytes(image)
    loaded = load_checkpoint(service_env.checkpoint)
    samples = list(read_archive(folder, "image_folder").samples)
    found = embed_samples(
        loaded.model, loaded.meta.preprocessing, samples,
        device=torch.device("cpu"), workers=0, progress=False,
    )  # fmt: skip
    return np.asarray(found.vectors[0], dtype=np.float64)


def test_scores_are_centred_cosines_with_a_match_probability_on_the_raw_cosine(
    client: TestClient, ham_image: bytes, service_env: ServiceEnv, tmp_path: Path
) -> None:
    """A case's score is the cosine computed by hand from the version's stored mean; its
    match_probability is the stored table read at the raw cosine of the query's embedding
    and the case's stored vector (which need not fall with the rank)."""
    cases = query(client, ham_image, top_k=20)["cases"]
    folder = active_folder(service_env)
    vectors, ids = load_vectors(folder)
    centre, record = stored_scores(folder)
    assert centre is not None
    assert record is not None
    row = {int(case_id): i for i, case_id in enumerate(ids)}
    query_vector = query_embedding(service_env, ham_image, tmp_path / "q")
    stored = vectors[row[cases[0]["case_id"]]]  # rank 1 is the query image itself
    assert float(stored @ query_vector) == pytest.approx(1.0, abs=1e-4)
    for case in cases:
        by_hand = unit(vectors[row[case["case_id"]]] - centre) @ unit(query_vector - centre)
        assert case["score"] == pytest.approx(float(by_hand), abs=1e-3)
    table = MatchCalibration.from_record(record)
    assert table.reads == "raw cosine"
    raw = np.array([unit(vectors[row[c["case_id"]]].astype(np.float64)) for c in cases])
    raw = raw @ query_vector  # the raw cosine of each case, by hand
    probabilities = np.array([case["match_probability"] for case in cases])
    # the service's embedding of the upload and this one agree to ~1e-6: the table is
    # monotone, so the served value lies between its readings just below and just above
    slack = 1e-5
    assert (probabilities >= table.predict(raw - slack) - 1e-12).all()
    assert (probabilities <= table.predict(raw + slack) + 1e-12).all()
    np.testing.assert_allclose(probabilities, table.predict(raw), atol=1e-3)
    at_score = table.predict([case["score"] for case in cases])
    assert not np.allclose(probabilities, at_score)  # not the table read at the score
    assert ((probabilities >= 0.0) & (probabilities <= 1.0)).all()
    raw_sorted = np.sort(vectors @ query_vector)[::-1]
    assert cases[1]["score"] - cases[19]["score"] > raw_sorted[1] - raw_sorted[19]  # spread


def test_openapi_documents_the_match_probability(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["HitOut"]["properties"]["match_probability"]
    assert "leave-one-group-out" in field["description"]
    assert "not a diagnosis" in field["description"]
    assert "centred" in schemas["HitOut"]["properties"]["score"]["description"]
    assert "raw cosine" in field["description"]
    assert "lower-ranked case can have the higher probability" in field["description"]
    assert "match_calibration" in schemas["QueryIndexOut"]["properties"]


def test_same_image_as_png_gives_the_same_answer(client: TestClient, ham_image: bytes) -> None:
    as_png = encode(Image.open(io.BytesIO(ham_image)), "PNG")
    jpeg, png = query(client, ham_image), query(client, as_png)
    assert png["query"]["format"] == "PNG"
    # JPEG → PNG is lossless from the decoded pixels: the same tensor, the same answer
    assert [c["case_id"] for c in png["cases"]] == [c["case_id"] for c in jpeg["cases"]]
    assert png["predictions"][0]["probability"] == pytest.approx(
        jpeg["predictions"][0]["probability"], abs=1e-5
    )


@pytest.mark.parametrize("top_k", [1, 7, 100])
def test_top_k_is_respected(client: TestClient, ham_image: bytes, top_k: int) -> None:
    assert len(query(client, ham_image, top_k=top_k)["cases"]) == top_k


def test_label_and_split_filters(client: TestClient, ham_image: bytes) -> None:
    body = query(client, ham_image, top_k=50, label="MEL")
    assert body["cases"]
    assert all(c["labels"][0]["code"] == "MEL" for c in body["cases"])
    body = query(client, ham_image, top_k=50, split="test")
    assert body["cases"]
    assert all(c["split"] == "test" for c in body["cases"])
    # a filter that matches nothing gives no cases, not an error
    assert query(client, ham_image, label="NOPE")["cases"] == []


def test_metadata_filter_needs_key_and_value(client: TestClient, ham_image: bytes) -> None:
    response = client.post(
        "/query", params={"filter": "modality"}, files={"file": ("q", ham_image)}
    )
    assert response.status_code == 400
    assert "key:value" in response.json()["detail"]


def test_dicom_query_with_preview(client: TestClient) -> None:
    pixels = (np.add.outer(np.arange(64), np.arange(64)) * 30).astype(np.uint16)
    body = query(client, dicom_bytes(pixels), preview="true", top_k=3)
    assert body["query"]["format"] == "DICOM"
    assert (body["query"]["width"], body["query"]["height"]) == (64, 64)
    assert body["query"]["preview"].startswith("data:image/png;base64,")
    assert len(body["cases"]) == 3


def test_case_record_image_and_thumbnail(
    client: TestClient, ham_image: bytes, service_env: ServiceEnv
) -> None:
    hit = query(client, ham_image, top_k=1)["cases"][0]
    record = client.get(f"/cases/{hit['case_id']}")
    assert record.status_code == 200
    assert record.json()["labels"] == hit["labels"]
    image = client.get(hit["image_url"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content == ham_image  # the archived original, byte for byte
    thumb = client.get(hit["thumbnail_url"])
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/png"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 256
    cached = list((service_env.data_dir / "cache" / "thumbnails").glob("*.png"))
    assert cached, "the thumbnail is cached on disk"
    assert client.get(hit["thumbnail_url"]).content == thumb.content


def test_unknown_case_is_404(client: TestClient) -> None:
    response = client.get("/cases/999999")
    assert response.status_code == 404
    assert "no case 999999" in response.json()["detail"]


def test_unknown_collection_is_404(client: TestClient, ham_image: bytes) -> None:
    response = client.post("/query", params={"collection": "cxr"}, files={"file": ("q", ham_image)})
    assert response.status_code == 404
    assert "derm" in response.json()["detail"]  # it says what is served


def test_operations_routes(client: TestClient, ham_image: bytes) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["collections"]["derm"]["size"] == 280
    query(client, ham_image)
    metrics = client.get("/metrics").text
    assert 'medret_http_requests_total{method="POST",route="/query",status="200"}' in metrics
    assert 'medret_query_stage_seconds_count{stage="embed"}' in metrics
    assert 'medret_index_vectors{collection="derm"} 280.0' in metrics
    schema = client.get("/openapi.json").json()
    assert {"/query", "/cases/{case_id}", "/admin/reindex", "/readyz"} <= set(schema["paths"])
    viewer = client.get("/")
    assert viewer.status_code == 200
    assert "text/html" in viewer.headers["content-type"]
    collections = client.get("/collections").json()
    assert [c["name"] for c in collections] == ["derm"]


def test_request_id_is_echoed(client: TestClient, ham_image: bytes) -> None:
    response = client.post(
        "/query", files={"file": ("q", ham_image)}, headers={"X-Request-ID": "viewer-42"}
    )
    assert response.headers["X-Request-ID"] == "viewer-42"
    assert response.json()["request_id"] == "viewer-42"
    unsafe = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["X-Request-ID"] != "bad id\twith spaces"


def test_cors_is_off_unless_configured(service_env: ServiceEnv) -> None:

    origin = {"Origin": "https://viewer.example", "Access-Control-Request-Method": "POST"}
    with TestClient(create_app(service_env.settings())) as plain:
        assert "access-control-allow-origin" not in plain.options("/query", headers=origin).headers
    settings = service_env.settings(cors_origins=["https://viewer.example"])
    with TestClient(create_app(settings)) as cors:
        preflight = cors.options("/query", headers=origin)
        assert preflight.headers["access-control-allow-origin"] == "https://viewer.example"


def test_an_unexpected_error_is_json_with_the_request_id(
    service_env: ServiceEnv, ham_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.api.routes.query as query_route

    def broken(*_: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(query_route, "search_for", broken)
    with TestClient(create_app(service_env.settings()), raise_server_exceptions=False) as client:
        response = client.post(
            "/query", files={"file": ("q", ham_image)}, headers={"X-Request-ID": "bug-1"}
        )
        assert response.status_code == 500
        assert response.json()["request_id"] == "bug-1"
        assert response.headers["X-Request-ID"] == "bug-1"
        assert client.get("/healthz").status_code == 200  # and the service goes on


def test_admin_bodies_are_small(client: TestClient) -> None:
    response = client.post(
        "/admin/reindex",
        content=b"{" + b" " * (100 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert "64 KiB" in response.json()["detail"]
