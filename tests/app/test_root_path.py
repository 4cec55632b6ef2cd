"""The service under a path prefix (issue #12): with a ``root_path`` (``uvicorn
--root-path``, a reverse proxy's prefix) the upload limit is still keyed to the route, so
an upload under the prefix gets the upload limit, not the 64 KiB limit of JSON bodies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.middleware import SMALL_BODY_LIMIT
from support.http import assert_json_answer
from support.images import encode_array, rng_image
from support.service import ADMIN_AUTH, ServiceEnv

PREFIX = "/medret"


@pytest.fixture(scope="module")
def prefixed(service_env: ServiceEnv) -> Iterator[TestClient]:
    app = create_app(service_env.settings(max_upload_mb=1))
    with TestClient(app, root_path=PREFIX) as client:
        yield client


def test_an_upload_under_the_prefix_gets_the_upload_limit(prefixed: TestClient) -> None:
    png = encode_array(rng_image((300, 300, 3)), "PNG")  # noise: ~270 KB
    assert SMALL_BODY_LIMIT < len(png) < 2**20
    response = prefixed.post(f"{PREFIX}/query", files={"file": ("q.png", png)})
    body = assert_json_answer(response, {200})
    assert body["cases"]
    assert body["cases"][0]["image_url"].startswith(f"{PREFIX}/cases/")


def test_limits_under_the_prefix_still_hold(prefixed: TestClient) -> None:
    too_big = encode_array(rng_image((700, 700, 3)), "PNG")  # ~1.4 MB: over the 1 MiB limit
    response = prefixed.post(f"{PREFIX}/query", files={"file": ("q.png", too_big)})
    assert "1.0 MiB" in assert_json_answer(response, {413})["detail"]
    json_body = b'{"collection": "derm", "source": "' + b"x" * SMALL_BODY_LIMIT + b'"}'
    response = prefixed.post(
        f"{PREFIX}/admin/reindex",
        content=json_body,
        headers={**ADMIN_AUTH, "Content-Type": "application/json"},
    )
    assert "64 KiB" in assert_json_answer(response, {413})["detail"]
