"""A service with an empty database is alive but not ready: queries are 503 with a reason,
everything else answers as usual (issue #5)."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from app.main import create_app
from support.http import assert_json_answer
from support.server import log_problems, start_bare_server
from support.service import ServiceEnv


def test_empty_database_is_503_in_process(tmp_path: Path, ham_image: bytes) -> None:
    settings = ServiceEnv(tmp_path, f"sqlite:///{tmp_path / 'm.db'}", tmp_path, tmp_path, tmp_path)
    with TestClient(create_app(settings.settings(admin_token=None))) as client:
        check_not_ready(client, ham_image)


def test_empty_database_is_503_over_http(tmp_path: Path, ham_image: bytes) -> None:
    with start_bare_server(tmp_path / "data", tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            check_not_ready(client, ham_image)
        assert server.process.poll() is None
    assert log_problems(server.log()) == []


def check_not_ready(client: httpx.Client, ham_image: bytes) -> None:
    body = assert_json_answer(client.post("/query", files={"file": ("q.jpg", ham_image)}), {503})
    assert "index" in body["detail"], body
    body = assert_json_answer(client.post("/query", files={"file": ("x", b"junk")}), {503})
    assert_json_answer(
        client.post("/query", params={"collection": "derm"}, files={"file": ("x", ham_image)}),
        {404, 503},
    )
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert client.get("/healthz").status_code == 200
    assert client.get("/collections").json() == []
    assert_json_answer(client.get("/cases/1"), {404})
    assert_json_answer(client.get("/cases/1/thumbnail"), {404})
