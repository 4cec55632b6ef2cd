"""Classification metrics from class probabilities (scikit-learn), one-label or multi-label.

*Single-label*: prediction = argmax of the probabilities. Per class: precision, recall, F1,
support (true count) and one-vs-rest ROC AUC. Accuracy, balanced accuracy (the mean
recall), the confusion matrix as counts and normalised by row (row = true class, each row
sums to 1; a class with no true example has an all-zero row).

*Multi-label*: prediction = probability >= ``threshold`` per finding. Per finding:
precision, recall, F1, support (positive count), AUROC; the mean AUROC is the NIH
ChestX-ray14 headline metric. Micro P/R/F1 and the sample-averaged F1 too; for the latter
an image with no true and no predicted finding (a normal image called normal) scores 1,
everywhere else a zero division counts as 0 (sklearn ``zero_division=0``).

Both: macro and support-weighted P/R/F1; the macro AUC is the mean over the classes whose
AUC is defined. A class whose targets have one outcome only has AUC ``None``. ROC curves
are stored in the result under ``"roc"`` (code → ``fpr``/``tpr`` lists, at most
:data:`MAX_ROC_POINTS` points each), so a report can draw them from its JSON alone.

A result names its task with :func:`task_name` (``"single-label"`` / ``"multi-label"``, the
``task`` value of every ``report.json``); :func:`report_task` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from labels import Task
from metrics.json_values import json_ready

__all__ = [
    "MAX_ROC_POINTS",
    "TASK_NAMES",
    "classification_metrics",
    "report_task",
    "task_name",
]

MAX_ROC_POINTS = 200
"""Most points kept per stored ROC curve (after ``roc_curve(drop_intermediate=True)``)."""

TASK_NAMES: Mapping[Task, str] = {task: task.phrase for task in Task}
"""How reports spell a task: the ``task`` value of ``report.json`` and the report's text."""


def task_name(task: Task) -> str:
    """The report spelling of ``task`` (``"single-label"`` or ``"multi-label"``)."""
    return TASK_NAMES[task]


def report_task(report: Mapping[str, Any]) -> Task:
    """The task a report (or one of its classification sections) was made for.

    Multi-label when its ``task`` says so, single-label otherwise (also when it is missing).
    """
    is_multi = report.get("task") == TASK_NAMES[Task.MULTI_LABEL]
    return Task.MULTI_LABEL if is_multi else Task.SINGLE_LABEL


def _roc_points(y_true: npt.NDArray[np.bool_], scores: npt.NDArray[Any]) -> dict[str, list[float]]:
    fpr, tpr, _ = roc_curve(y_true, scores, drop_intermediate=True)
    if fpr.size > MAX_ROC_POINTS:
        keep = np.unique(np.linspace(0, fpr.size - 1, MAX_ROC_POINTS).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": np.round(fpr, 5).tolist(), "tpr": np.round(tpr, 5).tolist()}


def _prf(
    y_true: npt.NDArray[Any], y_pred: npt.NDArray[Any], labels: list[int] | None, average: str
) -> dict[str, float]:
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=average, zero_division=0
    )
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def classification_metrics(
    probabilities: npt.ArrayLike,
    targets: npt.ArrayLike,
    *,
    task: Task,
    codes: Sequence[str],
    names: Sequence[str],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Per-class and averaged classification metrics (see the module docstring).

    ``probabilities`` is ``(N, C)``; ``targets`` is ``(N,)`` class ids (single-label) or
    ``(N, C)`` 0/1 rows (multi-label). The result is JSON-ready (undefined values are None).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    num_classes = len(codes)
    if len(names) != num_classes:
        raise ValueError(f"{len(codes)} codes but {len(names)} names")
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probabilities must be (N, {num_classes}), got shape {probs.shape}")
    multi_label = task is Task.MULTI_LABEL
    labels = list(range(num_classes))
    result: dict[str, Any] = {"task": task_name(task), "samples": int(probs.shape[0])}
    if multi_label:
        y_true = np.asarray(targets) > 0  # (N, C)
        if y_true.shape != probs.shape:
            raise ValueError(f"targets must be {probs.shape} 0/1 rows, got {y_true.shape}")
        y_pred = probs >= threshold
        indicator = y_true  # per-class one-vs-rest truth is the column itself
        result["threshold"] = float(threshold)
    else:
        ids = np.asarray(targets).astype(np.intp)
        if ids.shape != (probs.shape[0],):
            raise ValueError(f"targets must be ({probs.shape[0]},) class ids, got {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"class ids must lie in [0, {num_classes})")
        y_true_ids, y_pred_ids = ids, probs.argmax(axis=1)
        indicator = ids[:, None] == np.arange(num_classes)[None, :]

    truth: npt.NDArray[Any] = y_true if multi_label else y_true_ids
    predicted: npt.NDArray[Any] = y_pred if multi_label else y_pred_ids
    precision, recall, f1, support = precision_recall_fscore_support(
        truth,
        predicted,
        labels=labels if not multi_label else None,
        average=None,
        zero_division=0,
    )
    per_class: dict[str, dict[str, Any]] = {}
    roc: dict[str, dict[str, list[float]]] = {}
    for c, (code, name) in enumerate(zip(codes, names, strict=True)):
        column = indicator[:, c]
        auc: float | None = None
        if column.any() and not column.all():
            auc = float(roc_auc_score(column, probs[:, c]))
            roc[code] = _roc_points(column, probs[:, c])
        per_class[code] = {
            "name": name,
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
            "auc": auc,
        }
    defined_aucs = [v["auc"] for v in per_class.values() if v["auc"] is not None]
    result["per_class"] = per_class
    result["macro"] = {
        **_prf(truth, predicted, labels if not multi_label else None, "macro"),
        "auc": float(np.mean(defined_aucs)) if defined_aucs else None,
    }
    result["weighted"] = _prf(truth, predicted, labels if not multi_label else None, "weighted")
    if multi_label:
        result["micro"] = _prf(truth, predicted, None, "micro")
        result["mean_auroc"] = result["macro"]["auc"]
        # zero_division=1: the only 0/0 row is a normal image called normal, a perfect answer.
        _, _, samples_f1, _ = precision_recall_fscore_support(
            y_true, y_pred, average="samples", zero_division=1.0
        )
        result["samples_f1"] = float(samples_f1) if probs.shape[0] else None
    else:
        result["accuracy"] = float(np.mean(y_true_ids == y_pred_ids)) if ids.size else None
        result["balanced_accuracy"] = (
            float(balanced_accuracy_score(y_true_ids, y_pred_ids)) if ids.size else None
        )
        counts = confusion_matrix(y_true_ids, y_pred_ids, labels=labels)
        row_sums = counts.sum(axis=1, keepdims=True)
        normalised = np.divide(
            counts, row_sums, out=np.zeros(counts.shape, dtype=np.float64), where=row_sums > 0
        )
        result["confusion_matrix"] = {"counts": counts, "normalised": normalised}
    result["roc"] = roc
    return json_ready(result)
