"""Service fixtures: a small real collection (HAM10000 images) and apps serving it.

The collection is built once per session with the real indexer: 280 dermoscopy images
(up to 40 per class) from ``../shared/data/ham10000``, embedded by a small freshly
initialised checkpoint (the service's behaviour does not depend on the weights being
trained; the out-of-distribution test trains its own model). The builders are in
``tests/support/`` (``checkpoints``, ``real_data``, ``service``, ``server``).

The module-scoped fixtures (``asgi_client``, ``robust_server``, ``api``…) give each test
module its own app and its own live server, so a server's log holds only that module's
requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from support.checkpoints import make_checkpoint
from support.real_data import HAM_CODES, HAM_NAMES, ham_subset
from support.server import LiveServer, start_server
from support.service import ServiceEnv, build_collection


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> ServiceEnv:
    root = tmp_path_factory.mktemp("service")
    archive_root = root / "archives"
    archive = ham_subset(shared_data, archive_root / "ham", per_class=40)
    checkpoint = make_checkpoint(root / "derm.safetensors", HAM_CODES, size=64, names=HAM_NAMES)
    data_dir = root / "data"
    url = f"sqlite:///{root / 'medret.db'}"
    build_collection(url, data_dir, "derm", checkpoint, archive)
    return ServiceEnv(data_dir, url, checkpoint, archive, archive_root)


@pytest.fixture
def client(service_env: ServiceEnv) -> Iterator[TestClient]:
    with TestClient(create_app(service_env.settings())) as test_client:
        yield test_client


@pytest.fixture
def ham_image(service_env: ServiceEnv) -> bytes:
    return sorted((service_env.archive / "images").iterdir())[0].read_bytes()


@pytest.fixture(scope="session")
def live_server(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One real ``medret serve`` process (uvicorn, loopback) for the whole session."""
    with start_server(service_env, tmp_path_factory.mktemp("live") / "server.log") as server:
        yield server


# --------------------------------------------------------------------------- per module


@pytest.fixture(scope="module")
def asgi_client(service_env: ServiceEnv) -> Iterator[TestClient]:
    with TestClient(create_app(service_env.settings())) as client:
        yield client


@pytest.fixture(scope="module")
def robust_server(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A live server of the module's own, so its log holds only this module's requests."""
    with start_server(service_env, tmp_path_factory.mktemp("robust") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def uvicorn_client(robust_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=robust_server.url, timeout=120) as client:
        yield client


@pytest.fixture(params=["asgi", "uvicorn"])
def api(request: pytest.FixtureRequest) -> httpx.Client:
    """The in-process test client, then an HTTP client of the real uvicorn process."""
    name = "asgi_client" if request.param == "asgi" else "uvicorn_client"
    client: httpx.Client = request.getfixturevalue(name)
    return client


@pytest.fixture(scope="module")
def small_limit_server(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A live server that accepts uploads of at most 1 MiB."""
    log_path = tmp_path_factory.mktemp("limit") / "server.log"
    with start_server(service_env, log_path, MEDRET_MAX_UPLOAD_MB="1") as server:
        yield server
