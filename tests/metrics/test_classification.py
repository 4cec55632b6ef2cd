"""Classification metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from labels import Task
from metrics.classification import classification_metrics, report_task, task_name

CODES = ["a", "b", "c"]
NAMES = ["alpha", "beta", "gamma"]


def test_perfect_classifier() -> None:
    targets = np.array([0, 1, 2, 0, 1, 2])
    probs = np.full((6, 3), 0.1)
    probs[np.arange(6), targets] = 0.8
    metrics = classification_metrics(
        probs, targets, task=Task.SINGLE_LABEL, codes=CODES, names=NAMES
    )
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
    metrics = classification_metrics(
        PROBS, TARGETS, task=Task.SINGLE_LABEL, codes=CODES, names=NAMES
    )
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
    metrics = classification_metrics(
        probs, targets, task=Task.SINGLE_LABEL, codes=CODES, names=NAMES
    )
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
    metrics = classification_metrics(
        probs, targets, task=Task.MULTI_LABEL, codes=CODES, names=NAMES
    )
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
        probs, targets, task=Task.MULTI_LABEL, codes=["x", "y"], names=["x", "y"]
    )
    assert metrics["per_class"]["x"]["recall"] == 1.0
    assert metrics["per_class"]["y"]["recall"] == 0.0
    assert metrics["per_class"]["y"]["precision"] == 0.0  # zero division → 0
    # Sample F1: 1 (exact), 1 (normal called normal), 2·1·0.5/1.5 = 2/3.
    assert metrics["samples_f1"] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_the_task_is_named_as_reports_spell_it_and_read_back() -> None:
    assert task_name(Task.SINGLE_LABEL) == "single-label"
    assert task_name(Task.MULTI_LABEL) == "multi-label"
    for task in Task:
        assert report_task({"task": task_name(task)}) is task
    assert report_task({}) is Task.SINGLE_LABEL  # no task: the one-label columns
