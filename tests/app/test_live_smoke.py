"""Smoke: a real uvicorn process answers."""

from __future__ import annotations

import httpx

from support.server import LiveServer


def test_live_server_answers_a_query(live_server: LiveServer, ham_image: bytes) -> None:
    response = httpx.post(
        f"{live_server.url}/query", files={"file": ("q.jpg", ham_image)}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["cases"][0]["score"] > 0.99
