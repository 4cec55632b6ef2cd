"""Service fixtures: a small real collection (HAM10000 images) and apps serving it.

The collection is built once per session with the real indexer: 240 dermoscopy images
from ``../shared/data/ham10000`` embedded by a small freshly initialised checkpoint
(the service's behaviour does not depend on the weights being trained; the
out-of-distribution test trains its own model).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from indexer.builder import IndexBuilder, IndexerConfig
from indexer.store import MetadataStore
from model.checkpoint import CheckpointMeta, LabelSpace, save_checkpoint
from model.config import ModelConfig
from model.preprocessing import PreprocessConfig
from model.vit import build_model

HAM_CODES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ADMIN_TOKEN = "test-admin-token-0123456789"


def make_checkpoint(path: Path, codes: tuple[str, ...], *, size: int = 64, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=len(codes), depth=1, image_size=size, embed_dim=32
    )
    meta = CheckpointMeta(
        model=cfg,
        labels=LabelSpace.from_codes(codes),
        preprocessing=PreprocessConfig(image_size=(size, size)),
    )
    save_checkpoint(path, build_model(cfg), meta)
    return path


def ham_subset(shared: Path, dest: Path, per_class: int) -> Path:
    """A manifest archive with up to ``per_class`` images of each HAM10000 class."""
    source = shared / "ham10000"
    rows = list(csv.DictReader((source / "labels.csv").open()))
    taken: dict[str, int] = {}
    kept = []
    for row in rows:
        if taken.get(row["label"], 0) < per_class:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            kept.append(row)
    (dest / "images").mkdir(parents=True)  # the manifest names files as images/<name>
    for row in kept:
        shutil.copy(source / row["file"], dest / row["file"])
    with (dest / "labels.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return dest


@dataclass(frozen=True)
class ServiceEnv:
    data_dir: Path
    database_url: str
    checkpoint: Path
    archive: Path
    archive_root: Path

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": self.data_dir,
            "database_url": self.database_url,
            "admin_token": ADMIN_TOKEN,
            "archive_roots": [str(self.archive_root)],
            "reload_interval_s": 0.2,
            "index_workers": 0,
            **overrides,
        }
        return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> ServiceEnv:
    root = tmp_path_factory.mktemp("service")
    archive_root = root / "archives"
    archive = ham_subset(shared_data, archive_root / "ham", per_class=40)
    checkpoint = make_checkpoint(root / "derm.safetensors", HAM_CODES)
    data_dir = root / "data"
    url = f"sqlite:///{root / 'medret.db'}"
    store = MetadataStore.open(url)
    try:
        builder = IndexBuilder(
            store, IndexerConfig(data_dir=data_dir, workers=0, progress=False, batch_size=32)
        )
        builder.build("derm", checkpoint, archive)
    finally:
        store.close()
    return ServiceEnv(data_dir, url, checkpoint, archive, archive_root)


@pytest.fixture
def client(service_env: ServiceEnv) -> Iterator[TestClient]:
    with TestClient(create_app(service_env.settings())) as test_client:
        yield test_client


@pytest.fixture
def ham_image(service_env: ServiceEnv) -> bytes:
    return sorted((service_env.archive / "images").iterdir())[0].read_bytes()
