"""POST /explain and POST /query?explain=N against the real service (in-process and
uvicorn), plus the heat overlay they draw."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import app.explanations
from app.images import CaseImageError
from app.overlays import overlay_png
from model.explain import METHOD
from support.http import assert_json_answer

CANVAS = 64  # the test checkpoint's input size (tests/app/conftest.py)
PATCH = 16  # the tiny variant's patch size
GRID = CANVAS // PATCH


def query(api: httpx.Client, data: bytes, **params: object) -> Any:
    return assert_json_answer(
        api.post("/query", params=params, files={"file": ("q.jpg", data)}), {200}
    )


def explain(api: httpx.Client, data: bytes, **params: object) -> httpx.Response:
    return api.post("/explain", params=params, files={"file": ("q.jpg", data)})


def overlay_pixels(data_url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix), data_url[:40]
    image = Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :])))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def assert_map(found: dict[str, Any]) -> np.ndarray:
    grid = np.asarray(found["grid"], dtype=np.float64)
    assert grid.shape == (GRID, GRID)
    assert grid.min() >= 0
    assert grid.max() <= 1
    assert grid.max() == pytest.approx(1.0) or grid.max() == 0  # normalised by its peak
    assert overlay_pixels(found["overlay"]).shape == (CANVAS, CANVAS, 3)  # the canvas
    return grid


# --------------------------------------------------------------------------- POST /explain


def test_an_explanation_holds_the_contract_and_the_query_score(
    api: httpx.Client, ham_image: bytes
) -> None:
    answer = query(api, ham_image, top_k=3)
    hit = answer["cases"][1]  # not the image itself: a score below 1
    body = assert_json_answer(explain(api, ham_image, case_id=hit["case_id"]), {200})

    assert body["case_id"] == hit["case_id"]
    assert body["collection"] == "derm"
    assert body["method"] == METHOD
    assert body["patch_size"] == PATCH
    assert body["score"] == pytest.approx(hit["score"], abs=1e-4)  # the score it explains
    query_grid, case_grid = assert_map(body["query_map"]), assert_map(body["case_map"])
    assert query_grid.max() == 1
    assert case_grid.max() == 1
    class_map = body["class_map"]
    assert_map(class_map)
    top = answer["predictions"][0]
    assert (class_map["code"], class_map["name"]) == (top["code"], top["name"])
    assert body["explain_ms"] > 0
    assert body["request_id"]


def test_the_same_request_gives_the_same_maps(api: httpx.Client, ham_image: bytes) -> None:
    case_id = query(api, ham_image, top_k=2)["cases"][1]["case_id"]
    first, second = (
        assert_json_answer(explain(api, ham_image, case_id=case_id, collection="derm"), {200})
        for _ in range(2)
    )
    for key in ("query_map", "case_map", "class_map"):
        assert first[key] == second[key], key
    assert first["score"] == second["score"]


def test_unknown_cases_collections_and_bad_uploads(api: httpx.Client, ham_image: bytes) -> None:
    case_id = query(api, ham_image, top_k=1)["cases"][0]["case_id"]
    assert_json_answer(explain(api, ham_image, case_id=2**62), {404})
    assert_json_answer(explain(api, ham_image, case_id=case_id, collection="nope"), {404})
    for bad in ("0", "-3", "abc", str(2**63)):
        assert_json_answer(explain(api, ham_image, case_id=bad), {400})
    missing = api.post("/explain", files={"file": ("q.jpg", ham_image)})
    assert "case_id" in assert_json_answer(missing, {400})["detail"]
    corrupt = assert_json_answer(
        explain(api, ham_image[: len(ham_image) // 3], case_id=case_id), {422}
    )
    assert corrupt["error"] == "image_corrupt"
    text = assert_json_answer(
        explain(api, b"a clinical note, not a picture\n" * 9, case_id=case_id), {415}
    )
    assert "not an image" in text["detail"]


def test_a_case_whose_image_is_gone_is_410(
    asgi_client: TestClient, ham_image: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    case_id = query(asgi_client, ham_image, top_k=1)["cases"][0]["case_id"]

    def gone(case: Any, limits: Any) -> np.ndarray:
        raise CaseImageError(410, f"case {case.id}'s image is no longer in the archive")

    monkeypatch.setattr(app.explanations, "case_pixels", gone)
    body = assert_json_answer(explain(asgi_client, ham_image, case_id=case_id), {410})
    assert "no longer in the archive" in body["detail"]
    # /query still answers; the case it cannot explain has no explanation
    hits = query(asgi_client, ham_image, top_k=2, explain=1)["cases"]
    assert [h["explanation"] for h in hits] == [None, None]


# --------------------------------------------------------------------------- /query?explain=N


def test_query_explains_the_top_n_cases(api: httpx.Client, ham_image: bytes) -> None:
    plain = query(api, ham_image, top_k=4)
    assert all(h["explanation"] is None for h in plain["cases"])
    assert query(api, ham_image, top_k=4, explain=0)["cases"] == plain["cases"]

    hits = query(api, ham_image, top_k=4, explain=2)["cases"]
    assert [h["case_id"] for h in hits] == [h["case_id"] for h in plain["cases"]]
    explained = [h["explanation"] for h in hits[:2]]
    assert all(h["explanation"] is None for h in hits[2:])
    for hit, found in zip(hits, explained, strict=False):
        assert found["case_id"] == hit["case_id"]
        assert found["score"] == pytest.approx(hit["score"], abs=1e-4)
        assert found["method"] == METHOD
        assert_map(found["query_map"])
        assert_map(found["case_map"])
        assert "class_map" not in found


@pytest.mark.parametrize("bad", ["11", "-1", "two"])
def test_query_refuses_more_than_ten_explanations(
    api: httpx.Client, ham_image: bytes, bad: str
) -> None:
    response = api.post("/query", params={"explain": bad}, files={"file": ("q.jpg", ham_image)})
    assert "explain" in assert_json_answer(response, {400})["detail"]


def test_openapi_documents_explanations(api: httpx.Client) -> None:
    schema = assert_json_answer(api.get("/openapi.json"), {200})
    operation = schema["paths"]["/explain"]["post"]
    assert {"200", "400", "404", "410", "413", "415", "422", "503"} <= set(operation["responses"])
    names = {p["name"] for p in operation["parameters"]}
    assert {"case_id", "collection"} <= names
    query_names = {p["name"] for p in schema["paths"]["/query"]["post"]["parameters"]}
    assert "explain" in query_names
    assert "explanation" in schema["components"]["schemas"]["HitOut"]["properties"]


# --------------------------------------------------------------------------- the overlay


def test_the_overlay_colours_the_hot_cell_only() -> None:
    canvas = torch.full((3, 40, 40), 128, dtype=torch.uint8)  # 40 px: an 8-px margin
    grid = np.zeros((2, 2), dtype=np.float32)
    grid[1, 0] = 1.0
    pixels = np.asarray(Image.open(io.BytesIO(overlay_png(canvas, grid, PATCH))).convert("RGB"))
    assert pixels.shape == (40, 40, 3)
    hot, cold = pixels[24, 8].astype(int), pixels[8, 8].astype(int)
    assert hot[0] > hot[2] + 60  # red where the map is 1
    assert (cold == 128).all()  # the image as it is where the map is 0
    assert (pixels[35, 35] == 128).all()
    assert (pixels[5, 35] == 128).all()
