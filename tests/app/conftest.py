"""Service fixtures: a small real collection (HAM10000 images) and apps serving it.

The collection is built once per session with the real indexer: 280 dermoscopy images
(up to 40 per class) from ``../shared/data/ham10000``, embedded by a small freshly
initialised checkpoint (the service's behaviour does not depend on the weights being
trained; the out-of-distribution test trains its own model). Builders are in
``service_fixtures.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_fixtures import (
    HAM_CODES,
    HAM_NAMES,
    LiveServer,
    ServiceEnv,
    build_collection,
    ham_subset,
    make_checkpoint,
    start_server,
    stop_server,
)

from app.main import create_app


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> ServiceEnv:
    root = tmp_path_factory.mktemp("service")
    archive_root = root / "archives"
    archive = ham_subset(shared_data, archive_root / "ham", per_class=40)
    checkpoint = make_checkpoint(root / "derm.safetensors", HAM_CODES, names=HAM_NAMES)
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
    server = start_server(service_env, tmp_path_factory.mktemp("live") / "server.log")
    try:
        yield server
    finally:
        stop_server(server)
