"""Classification metrics, k-NN voting, embedding evaluation and the report files."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from model.retrieval_metrics import NO_FINDING
from training.evaluation import (
    TIE_NUDGE,
    classification_metrics,
    evaluate_embeddings,
    headline,
    knn_vote,
    write_report,
)

CODES = ["a", "b", "c"]
NAMES = ["alpha", "beta", "gamma"]


# --------------------------------------------------------------------------- classification


def test_perfect_classifier() -> None:
    targets = np.array([0, 1, 2, 0, 1, 2])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), targets] = 0.8
    metrics = classification_metrics(probs, targets, multi_label=False, codes=CODES, names=NAMES)
    for code in CODES:
        assert metrics["per_class"][code]["f1"] == 1.0
        assert metrics["per_class"][code]["auc"] == 1.0
        assert metrics["per_class"][code]["support"] == 2
    assert metrics["macro"]["f1"] == 1.0
    assert metrics["accuracy"] == 1.0
    np.testing.assert_array_equal(metrics["confusion_matrix"]["normalised"], np.eye(3))
    np.testing.assert_array_equal(metrics["confusion_matrix"]["counts"], 2 * np.eye(3))


# true   0    0    0    1    1    2
# pred   0    0    1    1    0    2
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.7, 0.1],
        [0.5, 0.4, 0.1],
        [0.1, 0.1, 0.8],
    ]
)
TARGETS = np.array([0, 0, 0, 1, 1, 2])


def test_known_confusion_matches_hand_computed_values() -> None:
    metrics = classification_metrics(PROBS, TARGETS, multi_label=False, codes=CODES, names=NAMES)
    a, b, c = (metrics["per_class"][code] for code in CODES)
    # a: TP 2, FP 1, FN 1; b: TP 1, FP 1, FN 1; c: TP 1.
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (b["precision"], b["recall"], b["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((1.0, 1.0, 1.0))
    assert a["name"] == "alpha"
    # AUC as the fraction of (positive, negative) pairs ordered correctly:
    # a: positives .7 .6 .3 vs negatives .2 .5 .1 → 8/9; b: .7 .4 vs .2 .3 .6 .1 → 7/8.
    assert a["auc"] == pytest.approx(8 / 9)
    assert b["auc"] == pytest.approx(7 / 8)
    assert c["auc"] == pytest.approx(1.0)
    assert metrics["macro"]["auc"] == pytest.approx((8 / 9 + 7 / 8 + 1) / 3)
    assert metrics["macro"]["f1"] == pytest.approx(13 / 18)
    assert metrics["weighted"]["f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1) / 6)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert metrics["confusion_matrix"]["counts"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    np.testing.assert_allclose(
        metrics["confusion_matrix"]["normalised"], [[2 / 3, 1 / 3, 0], [0.5, 0.5, 0], [0, 0, 1]]
    )
    json.dumps(metrics, allow_nan=False)


def test_class_without_positives_has_auc_none() -> None:
    targets = np.array([0, 1, 0, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.5, 0.4]])
    metrics = classification_metrics(probs, targets, multi_label=False, codes=CODES, names=NAMES)
    assert metrics["per_class"]["c"]["auc"] is None
    assert metrics["per_class"]["c"]["support"] == 0
    assert metrics["macro"]["auc"] == pytest.approx(1.0)  # over the classes where it is defined
    assert metrics["confusion_matrix"]["normalised"][2] == [0.0, 0.0, 0.0]
    assert "c" not in metrics["roc"]
    json.dumps(metrics, allow_nan=False)


def test_multi_label_auroc_per_finding_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 2, size=(60, 3))
    targets[:, 2] = 1  # one outcome only → undefined
    probs = np.clip(targets * 0.3 + rng.random((60, 3)) * 0.7, 0, 1)
    metrics = classification_metrics(probs, targets, multi_label=True, codes=CODES, names=NAMES)
    expected = [roc_auc_score(targets[:, c], probs[:, c]) for c in range(2)]
    assert metrics["per_class"]["a"]["auc"] == pytest.approx(expected[0])
    assert metrics["per_class"]["b"]["auc"] == pytest.approx(expected[1])
    assert metrics["per_class"]["c"]["auc"] is None
    assert metrics["mean_auroc"] == pytest.approx(np.mean(expected))
    assert metrics["per_class"]["a"]["support"] == int(targets[:, 0].sum())
    assert "confusion_matrix" not in metrics
    assert len(metrics["roc"]["a"]["fpr"]) <= 200
    json.dumps(metrics, allow_nan=False)


def test_multi_label_thresholding_and_sample_f1() -> None:
    targets = np.array([[1, 0], [0, 0], [1, 1]])
    probs = np.array([[0.9, 0.2], [0.1, 0.3], [0.6, 0.4]])  # row 3 misses finding 2
    metrics = classification_metrics(
        probs, targets, multi_label=True, codes=["x", "y"], names=["x", "y"]
    )
    assert metrics["per_class"]["x"]["recall"] == 1.0
    assert metrics["per_class"]["y"]["recall"] == 0.0
    assert metrics["per_class"]["y"]["precision"] == 0.0  # zero division → 0
    # Sample F1: 1 (exact), 1 (normal called normal), 2·1·0.5/1.5 = 2/3.
    assert metrics["samples_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)


# --------------------------------------------------------------------------- k-NN vote


def test_knn_vote_majority() -> None:
    gallery = np.array([0, 1, 1, 2, 0])
    scores = knn_vote(np.array([[1, 2, 0, 3, 4]]), gallery, k=3, num_classes=3, multi_label=False)
    np.testing.assert_allclose(scores, [[1 / 3, 2 / 3, 0.0]])


def test_knn_vote_tie_goes_to_higher_ranked_neighbour_or_larger_similarity() -> None:
    gallery = np.array([0, 1, 1, 2, 0])
    ranking = np.array([[1, 0, 4, 2]])  # classes 1, 0, 0, 1: two votes each
    scores = knn_vote(ranking, gallery, k=4, num_classes=3, multi_label=False)
    assert scores.argmax(axis=1).tolist() == [1]  # class of the rank-1 neighbour
    np.testing.assert_allclose(scores, [[0.5, 0.5, 0.0]], atol=2 * TIE_NUDGE)
    assert scores.sum() == pytest.approx(1.0)
    sims = np.array([[0.9, 0.85, 0.8, 0.1]])  # class 0 sums 1.65, class 1 sums 1.0
    with_sims = knn_vote(ranking, gallery, k=4, num_classes=3, multi_label=False, similarities=sims)
    assert with_sims.argmax(axis=1).tolist() == [0]


def test_knn_vote_multi_label_fractions() -> None:
    gallery = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 1]])
    scores = knn_vote(np.array([[1, 0, 2, 3]]), gallery, k=3, num_classes=3, multi_label=True)
    np.testing.assert_allclose(scores, [[2 / 3, 1 / 3, 0.0]])


# --------------------------------------------------------------------------- evaluate_embeddings


def _clustered(
    rng: np.random.Generator, labels: np.ndarray, centres: np.ndarray, noise: float
) -> np.ndarray:
    points = centres[labels] + noise * rng.standard_normal((len(labels), centres.shape[1]))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _single_label_report(noise: float = 0.05, logit_noise: float = 0.0) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    centres = np.eye(16)[:3]
    gallery_targets = np.repeat(np.arange(3), [30, 20, 10])  # unequal classes
    query_targets = np.repeat(np.arange(3), [8, 6, 4])
    query_emb = _clustered(rng, query_targets, centres, noise)
    return evaluate_embeddings(
        query_emb=query_emb,
        query_targets=query_targets,
        query_probs=_softmax(
            query_emb @ centres.T * 10 + logit_noise * rng.standard_normal((len(query_emb), 3))
        ),
        gallery_emb=_clustered(rng, gallery_targets, centres, noise),
        gallery_targets=gallery_targets,
        multi_label=False,
        codes=CODES,
        names=NAMES,
        knn_k=5,
    )


def test_well_separated_clusters_retrieve_perfectly() -> None:
    report = _single_label_report()
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
        multi_label=False,
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
        multi_label=True,
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


def test_headline_columns() -> None:
    report = _single_label_report()
    head = headline(report)
    assert list(head) == ["macro_f1", "balanced_accuracy", "macro_auc", "mAP_macro", "P@10_macro"]
    assert head["mAP_macro"] == report["retrieval"]["macro"]["mAP"]
    assert head["balanced_accuracy"] == 1.0
    multi = headline({"task": "multi-label", "retrieval": {"ks": [2, 5], "macro": {}}})
    assert list(multi) == ["mean_auroc", "mAP_macro", "P@5_macro", "macro_f1"]
    assert all(math.isnan(v) for v in multi.values())


# --------------------------------------------------------------------------- report files


def _assert_png(path: Path) -> None:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 300
        assert image.height >= 300
        assert len(np.unique(np.asarray(image.convert("L")))) > 10  # something was drawn


def test_write_report_single_label(tmp_path: Path) -> None:
    pyplot_loaded_before = "matplotlib.pyplot" in sys.modules
    report = _single_label_report(noise=0.6, logit_noise=4.0)  # imperfect, distinct numbers
    written = write_report(report, tmp_path / "out", title="ISIC test")
    names = sorted(path.name for path in written)
    assert names == [
        "confusion_matrix.png",
        "per_class_prf.png",
        "report.json",
        "report.md",
        "roc_curves.png",
    ]
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == report
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown.startswith("# ISIC test")
    for value in headline(report).values():
        assert f"{value:.3f}" in markdown
    assert "| a | alpha |" in markdown
    assert "Confusion matrix" in markdown
    for name in ("confusion_matrix.png", "per_class_prf.png", "roc_curves.png"):
        _assert_png(tmp_path / "out" / name)
    if not pyplot_loaded_before:
        assert "matplotlib.pyplot" not in sys.modules


def test_write_report_multi_label_has_no_confusion_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    targets = rng.integers(0, 2, size=(40, 2))
    probs = np.clip(0.4 * targets + 0.6 * rng.random((40, 2)), 0, 1)
    report = {
        "task": "multi-label",
        "codes": ["x", "y"],
        "names": ["finding x", "finding y"],
        "classification": classification_metrics(
            probs, targets, multi_label=True, codes=["x", "y"], names=["finding x", "finding y"]
        ),
    }
    written = write_report(report, tmp_path, title="NIH")
    assert sorted(p.name for p in written) == [
        "per_class_prf.png",
        "report.json",
        "report.md",
        "roc_curves.png",
    ]
    markdown = (tmp_path / "report.md").read_text()
    assert f"{report['classification']['mean_auroc']:.3f}" in markdown
