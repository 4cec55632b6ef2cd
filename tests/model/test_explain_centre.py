"""An explanation explains the score the index version ranks by: centred when it is."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging.preprocessing import PreprocessConfig
from model.architectures import build_model
from model.config import ModelConfig
from model.explain import explain_similarity
from model.inference import infer

CPU = torch.device("cpu")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_the_explained_score_is_the_centred_cosine() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=2, depth=1, image_size=32, embed_dim=16, patch_size=16
    )
    network = build_model(cfg).eval()
    pre = PreprocessConfig(image_size=(32, 32))
    canvases = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    embeddings = infer(network, canvases, pre, CPU, bf16=False).embeddings.numpy()
    centre = unit(embeddings.mean(0) + 0.1 * np.random.default_rng(0).standard_normal(16))
    centre = (0.9 * centre).astype(np.float32)  # a mean of unit vectors is shorter than 1

    plain = explain_similarity(network, canvases[0], canvases[1], pre, CPU)
    centred = explain_similarity(network, canvases[0], canvases[1], pre, CPU, centre=centre)
    assert plain.score == pytest.approx(float(embeddings[0] @ embeddings[1]), abs=1e-5)
    by_hand = float(unit(embeddings[0] - centre) @ unit(embeddings[1] - centre))
    assert centred.score == pytest.approx(by_hand, abs=1e-5)
    assert abs(centred.score - plain.score) > 1e-3  # the centre changes what is explained
    assert centred.query_map.shape == plain.query_map.shape
    assert 0.0 <= centred.query_map.min() <= centred.query_map.max() <= 1.0

    # the service's form: the query's embedding as /query computed it (unit, not centred)
    given = explain_similarity(
        network, canvases[0], canvases[1], pre, CPU, centre=centre, query_embedding=embeddings[0]
    )
    assert given.score == pytest.approx(by_hand, abs=1e-5)
    np.testing.assert_allclose(given.query_map, centred.query_map, atol=1e-5)
    np.testing.assert_allclose(given.case_map, centred.case_map, atol=1e-5)
