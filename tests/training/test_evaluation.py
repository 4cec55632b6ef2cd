"""Evaluating embeddings: retrieval, the model head's and the k-NN vote's classification."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from imaging.preprocessing import PreprocessConfig
from labels import Task
from metrics.retrieval import NO_FINDING
from model.architectures import build_model
from model.config import ModelConfig
from model.inference import infer
from support.reports import single_label_report
from training.evaluation import embed_rows, evaluate_embeddings

CPU = torch.device("cpu")


class RowCanvases:
    """Stands in for the pixel cache: row ``r`` is a 32×32 canvas with a gradient by ``r``."""

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        ramp = torch.arange(32, dtype=torch.float32)
        canvases = [(ramp[None, :, None] * (1 + int(r)) + ramp[None, None, :]) for r in rows]
        return (torch.stack(canvases).expand(-1, 3, -1, -1) % 256).to(torch.uint8)


def test_embed_rows_embeds_in_eval_mode_and_gives_the_mode_back() -> None:
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=3, depth=1, image_size=32, embed_dim=16, dropout=0.5
    )
    torch.manual_seed(0)
    net = build_model(cfg).train()
    rows, pre, cache = np.arange(5), PreprocessConfig(image_size=(32, 32)), RowCanvases()
    emb, logits = embed_rows(net, cache, rows, pre, CPU, batch_size=2, bf16=False)
    assert net.training
    assert emb.shape == (5, 16)
    assert logits.shape == (5, 3)
    again, _ = embed_rows(net, cache, rows, pre, CPU, batch_size=5, bf16=False)
    np.testing.assert_allclose(again, emb, atol=1e-6)  # no dropout, any batch size
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    expected = infer(net.eval(), cache.batch(rows), pre, CPU, bf16=False)
    np.testing.assert_allclose(emb, expected.embeddings.numpy(), atol=1e-6)
    np.testing.assert_allclose(logits, expected.logits.numpy(), atol=1e-5)


def test_well_separated_clusters_retrieve_perfectly() -> None:
    report = single_label_report()
    retrieval = report["retrieval"]
    assert retrieval["micro"]["mAP"] == pytest.approx(1.0)
    assert retrieval["macro"]["P@10"] == pytest.approx(1.0)
    assert retrieval["micro"]["R@10"] == pytest.approx((8 * 10 / 30 + 6 * 10 / 20 + 4 * 1) / 18)
    assert retrieval["per_class"]["c"]["queries"] == 4
    assert report["classification"]["accuracy"] == 1.0
    assert report["knn_classification"]["accuracy"] == 1.0
    assert report["counts"] == {
        "queries": 18,
        "gallery": 60,
        "queries_without_relevant": 0,
        "classes": 3,
        "knn_k": 5,
        "exclude_self": False,
    }
    json.dumps(report, allow_nan=False)


def test_random_embeddings_give_map_near_the_class_prior() -> None:
    rng = np.random.default_rng(3)
    gallery_targets = rng.integers(0, 4, size=800)
    query_targets = rng.integers(0, 4, size=120)
    report = evaluate_embeddings(
        query_emb=rng.standard_normal((120, 32)),
        query_targets=query_targets,
        query_probs=None,
        gallery_emb=rng.standard_normal((800, 32)),
        gallery_targets=gallery_targets,
        task=Task.SINGLE_LABEL,
        codes=["w", "x", "y", "z"],
        names=["w", "x", "y", "z"],
    )
    prior = np.mean(gallery_targets[:, None] == query_targets[None, :])
    assert report["retrieval"]["micro"]["mAP"] == pytest.approx(prior, abs=0.03)
    assert report["retrieval"]["micro"]["P@10"] == pytest.approx(prior, abs=0.06)
    assert "classification" not in report


def test_multi_label_evaluation_reports_no_finding_group() -> None:
    rng = np.random.default_rng(2)
    centres = np.eye(8)[:3]  # findings x, y and a "normal" direction
    gallery_targets = rng.integers(0, 2, size=(80, 2))
    query_targets = rng.integers(0, 2, size=(30, 2))

    def embed(targets: np.ndarray) -> np.ndarray:
        normal = (targets.sum(axis=1) == 0).astype(float)[:, None]
        points = targets @ centres[:2] + normal * centres[2]
        points = points + 0.05 * rng.standard_normal(points.shape)
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    query_emb = embed(query_targets)
    report = evaluate_embeddings(
        query_emb=query_emb,
        query_targets=query_targets,
        query_probs=1 / (1 + np.exp(-10 * (query_emb @ centres[:2].T - 0.3))),
        gallery_emb=embed(gallery_targets),
        gallery_targets=gallery_targets,
        task=Task.MULTI_LABEL,
        codes=["x", "y"],
        names=["finding x", "finding y"],
    )
    per_class = report["retrieval"]["per_class"]
    assert list(per_class) == ["x", "y", NO_FINDING]
    assert per_class[NO_FINDING]["queries"] == int((query_targets.sum(axis=1) == 0).sum())
    assert per_class[NO_FINDING]["P@2"] == pytest.approx(1.0)  # normals find normals
    assert report["classification"]["mean_auroc"] == pytest.approx(1.0)
    assert report["retrieval"]["micro"]["P@10"] > 0.9
    json.dumps(report, allow_nan=False)
