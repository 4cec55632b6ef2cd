"""A collection embedded by EfficientNet-Lite0 indexes, answers queries, and refuses region
explanations (which need the ViT's patch tokens) with the documented 501 sentence, not a
crash (500)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from imaging.preprocessing import PreprocessConfig
from labels import LabelSpace
from model.checkpoint import CheckpointMeta, save_checkpoint
from model.config import ModelConfig
from model.efficientnet import INPUT_MEAN, INPUT_STD, EfficientNetLite0, load_imagenet_weights
from support.http import assert_json_answer
from support.real_data import HAM_CODES, HAM_NAMES, ham_subset
from support.service import ServiceEnv, build_collection

SIZE = 64


def lite_checkpoint(path: Path) -> Path:
    cfg = ModelConfig.from_variant(
        "tiny",
        num_classes=len(HAM_CODES),
        image_size=SIZE,
        embed_dim=32,
        architecture="efficientnet_lite0",
    )
    net = EfficientNetLite0(cfg)
    load_imagenet_weights(net)
    meta = CheckpointMeta(
        model=cfg,
        labels=LabelSpace.from_codes(HAM_CODES, HAM_NAMES),
        preprocessing=PreprocessConfig(image_size=(SIZE, SIZE), mean=INPUT_MEAN, std=INPUT_STD),
    )
    save_checkpoint(path, net.eval(), meta)
    return path


@pytest.fixture(scope="module")
def lite_env(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> ServiceEnv:
    root = tmp_path_factory.mktemp("lite_service")
    archive_root = root / "archives"
    archive = ham_subset(shared_data, archive_root / "ham", per_class=3)
    checkpoint = lite_checkpoint(root / "lite.safetensors")
    url = f"sqlite:///{root / 'medret.db'}"
    build_collection(url, root / "data", "derm", checkpoint, archive)
    return ServiceEnv(root / "data", url, checkpoint, archive, archive_root)


def test_an_efficientnet_collection_serves_queries_and_refuses_explanations(
    lite_env: ServiceEnv,
) -> None:
    images = sorted((lite_env.archive / "images").iterdir())
    with TestClient(create_app(lite_env.settings())) as client:
        api: httpx.Client = client
        found = assert_json_answer(
            api.post(
                "/query", params={"top_k": 5}, files={"file": ("q.jpg", images[0].read_bytes())}
            ),
            {200},
        )
        cases = found["cases"]
        assert len(cases) == 5
        assert cases[0]["score"] == pytest.approx(1.0, abs=1e-4)  # the image itself
        scores = [c["score"] for c in cases]
        assert scores == sorted(scores, reverse=True)
        other = assert_json_answer(
            api.post(
                "/query", params={"top_k": 5}, files={"file": ("q.jpg", images[-1].read_bytes())}
            ),
            {200},
        )
        assert other["cases"][0]["case_id"] != cases[0]["case_id"]
        # the documented "cannot be explained" answer (docs/service.md), a JSON sentence
        for response in (
            api.post(
                "/explain",
                params={"case_id": cases[1]["case_id"]},
                files={"file": ("q.jpg", images[0].read_bytes())},
            ),
            api.post(
                "/query", params={"explain": 1}, files={"file": ("q.jpg", images[0].read_bytes())}
            ),
        ):
            assert response.status_code == 501, response.text[:300]
            assert "region explanations need the ViT" in response.json()["detail"]
