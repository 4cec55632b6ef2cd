"""The admin API's guards (issue #5): disabled without a token, 401 for a wrong one, and
bad sources, job ids and case ids refused before any job starts."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.services import Services
from support.http import assert_json_answer
from support.service import ADMIN_AUTH, ADMIN_TOKEN, ServiceEnv


def services_of(client: TestClient) -> Services:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert isinstance(services, Services)
    return services


def every_admin_route(
    client: TestClient, env: ServiceEnv, headers: dict[str, Any]
) -> list[httpx.Response]:
    """One request to each admin route (reindex, a job, a case removal, the followers) with
    ``headers``."""
    return [
        client.post(
            "/admin/reindex",
            json={"collection": "derm", "source": str(env.archive)},
            headers=headers,
        ),
        client.get(f"/admin/jobs/{uuid.uuid4()}", headers=headers),
        client.delete("/admin/cases/1", headers=headers),
        client.post(
            "/admin/follow",
            json={"collection": "derm", "source": "dicomweb+http://127.0.0.1:9/dicom-web"},
            headers=headers,
        ),
        client.get("/admin/follow", headers=headers),
        client.delete("/admin/follow/derm", headers=headers),
    ]


def test_admin_is_disabled_without_a_token(service_env: ServiceEnv) -> None:
    with TestClient(create_app(service_env.settings(admin_token=None))) as client:
        jobs_before = services_of(client).store.list_jobs()
        calls = [
            *every_admin_route(client, service_env, ADMIN_AUTH),
            client.delete("/admin/cases/1"),
        ]
        for response in calls:
            body = assert_json_answer(response, {404})
            assert "disabled" in body["detail"], body
        assert services_of(client).store.list_jobs() == jobs_before


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token-0123456789",
        f"Basic {ADMIN_TOKEN}",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"bearer  {ADMIN_TOKEN} extra",
        "Bearer \u00e9\u00e9\u00e9".encode("latin-1"),
    ],
)
def test_admin_wrong_token_is_401(
    asgi_client: TestClient, service_env: ServiceEnv, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    jobs_before = services_of(asgi_client).store.list_jobs()
    for response in every_admin_route(asgi_client, service_env, headers):
        assert_json_answer(response, {401})
        assert response.headers["www-authenticate"] == "Bearer"
    assert services_of(asgi_client).store.list_jobs() == jobs_before


def _reindex_bodies(env: ServiceEnv) -> list[tuple[str, dict[str, Any], set[int]]]:
    root = env.archive_root
    return [
        ("dotdot relative", {"source": "../../etc"}, {400}),
        ("relative", {"source": "archives/ham"}, {400}),
        ("outside roots", {"source": "/etc"}, {403}),
        ("dotdot out of a root", {"source": f"{root}/../../../../etc"}, {403}),
        ("parent of the root", {"source": f"{root}/.."}, {403}),
        ("home", {"source": "~"}, {400, 403}),
        ("proc", {"source": "/proc/self/root/etc"}, {403}),
        ("null byte", {"source": f"{env.archive}\x00/etc"}, {400}),
        ("missing inside root", {"source": f"{root}/does-not-exist"}, {400}),
        ("empty source", {"source": ""}, {400}),
        ("checkpoint outside", {"source": str(env.archive), "checkpoint": "/etc/passwd"}, {403}),
        (
            "checkpoint dotdot",
            {"source": str(env.archive), "checkpoint": f"{root}/../../etc/passwd"},
            {403},
        ),
        ("collection path", {"collection": "../etc", "source": str(env.archive)}, {400}),
        ("collection new no ckpt", {"collection": "fresh", "source": str(env.archive)}, {400}),
        ("mode bogus", {"source": str(env.archive), "mode": "rm -rf"}, {400}),
        ("layout path", {"source": str(env.archive), "layout": "../x"}, {400}),
        ("source not a string", {"source": ["/etc"]}, {400}),
        ("source huge", {"source": "/" + "a" * 5000}, {400}),
    ]


def test_reindex_refuses_bad_sources_and_starts_nothing(
    asgi_client: TestClient, service_env: ServiceEnv
) -> None:
    services = services_of(asgi_client)
    jobs_before = services.store.list_jobs()
    for name, fields, expected in _reindex_bodies(service_env):
        payload = {"collection": "derm", **fields}
        response = asgi_client.post("/admin/reindex", json=payload, headers=ADMIN_AUTH)
        assert response.status_code in expected, (name, response.status_code, response.text)
        assert_json_answer(response, expected)
    for raw in (b"not json", b"{", b"[]", b"null", b'{"collection": 1}'):
        response = asgi_client.post(
            "/admin/reindex",
            content=raw,
            headers={**ADMIN_AUTH, "Content-Type": "application/json"},
        )
        assert_json_answer(response, {400})
    assert services.store.list_jobs() == jobs_before
    assert services.launcher._children == {}


def test_admin_job_ids_are_validated(asgi_client: TestClient) -> None:
    for job_id in ("1", "..%2f..%2fetc%2fpasswd", "abc", "%00"):
        assert_json_answer(asgi_client.get(f"/admin/jobs/{job_id}", headers=ADMIN_AUTH), {400, 404})
    body = assert_json_answer(
        asgi_client.get(f"/admin/jobs/{uuid.uuid4()}", headers=ADMIN_AUTH), {404}
    )
    assert "no job" in body["detail"]
    for case_id in ("-1", "0", "abc", str(2**70)):
        assert_json_answer(asgi_client.delete(f"/admin/cases/{case_id}", headers=ADMIN_AUTH), {400})
    assert_json_answer(asgi_client.delete("/admin/cases/99999999", headers=ADMIN_AUTH), {404})
    assert services_of(asgi_client).launcher._children == {}
