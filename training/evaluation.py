"""Evaluation of a trained model: classification, retrieval, k-NN voting and the report files.

DESIGN.md §4. The retrieval definitions (relevance, ranking, P@K, R@K, AP, micro/macro) are in
:mod:`model.retrieval_metrics`; this module adds:

Classification (:func:`classification_metrics`)
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
    AUC is defined. A class whose targets have one outcome only has AUC ``None``.
    ROC curves are stored in the result under ``"roc"`` (code → ``fpr``/``tpr`` lists, at most
    :data:`MAX_ROC_POINTS` points each), so :func:`write_report` can draw them from the
    report alone.

k-NN classification (:func:`knn_vote`)
    Class scores from the top-k retrieved gallery items. Single-label: the fraction of the k
    neighbours of each class (the scores sum to 1). A tie for the most votes goes to the class
    with the larger summed similarity when similarities are given, and otherwise (or if still
    tied) to the class of the higher-ranked neighbour; the winner's score is raised by
    :data:`TIE_NUDGE` (then the row renormalised) so that argmax picks it. Multi-label: the
    fraction of the k neighbours having each finding (used as scores; >= 0.5 predicts it).

Retrieval (:func:`evaluate_embeddings`)
    Exact search: inner products of the unit-norm embeddings with numpy, a block of queries at
    a time (no FAISS here: :mod:`training` must not depend on :mod:`indexer`).

Reports (:func:`write_report`)
    ``report.json`` (the whole result; NaN is written as ``null``), ``report.md`` (headline,
    per-class and retrieval tables, confusion matrix), and PNG plots drawn with matplotlib's
    ``Figure`` API (Agg canvas, pyplot's global state is never touched).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

from model.retrieval_metrics import (
    NO_FINDING,
    metric_names,
    per_query_metrics,
    ranking_chunks,
    summarise_retrieval,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MAX_ROC_POINTS",
    "TIE_NUDGE",
    "classification_metrics",
    "evaluate_embeddings",
    "headline",
    "json_ready",
    "knn_vote",
    "write_report",
]

logger = logging.getLogger(__name__)

MAX_ROC_POINTS = 200
"""Most points kept per stored ROC curve (after ``roc_curve(drop_intermediate=True)``)."""

TIE_NUDGE = 1e-6
"""Score added to the winner of a tied single-label k-NN vote (far below 1/k)."""

SINGLE_LABEL = "single-label"
MULTI_LABEL = "multi-label"


# --------------------------------------------------------------------------- JSON


def json_ready(value: Any) -> Any:
    """Return ``value`` with numpy types turned into Python ones and NaN/inf into ``None``."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer | int):
        return int(value)
    if isinstance(value, np.floating | float):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


# --------------------------------------------------------------------------- classification


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
    multi_label: bool,
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
    labels = list(range(num_classes))
    result: dict[str, Any] = {
        "task": MULTI_LABEL if multi_label else SINGLE_LABEL,
        "samples": int(probs.shape[0]),
    }
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


# --------------------------------------------------------------------------- k-NN voting


def knn_vote(
    ranking: npt.ArrayLike,
    gallery_targets: npt.ArrayLike,
    *,
    k: int,
    num_classes: int,
    multi_label: bool,
    similarities: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """``(Q, C)`` class scores from the top ``k`` of each ranking (see the module docstring).

    ``ranking`` is ``(Q, >= k)`` gallery indices, most similar first (fewer columns → all are
    used); ``similarities`` (same shape, optional) breaks single-label ties.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.asarray(ranking)
    if order.ndim != 2 or order.shape[1] == 0:
        raise ValueError(f"ranking must be (Q, >= 1), got shape {order.shape}")
    top = order[:, :k]  # (Q, k')
    k_used = top.shape[1]
    if multi_label:
        rows = np.asarray(gallery_targets) > 0  # (G, C)
        if rows.ndim != 2 or rows.shape[1] != num_classes:
            raise ValueError(f"gallery_targets must be (G, {num_classes}), got {rows.shape}")
        return rows[top].mean(axis=1, dtype=np.float64)  # (Q, C)

    classes = np.asarray(gallery_targets).astype(np.intp)[top]  # (Q, k')
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"gallery class ids must lie in [0, {num_classes})")
    votes = classes[:, :, None] == np.arange(num_classes)[None, None, :]  # (Q, k', C)
    counts = votes.sum(axis=1)  # (Q, C)
    candidates = counts == counts.max(axis=1, keepdims=True)
    tied = candidates.sum(axis=1) > 1
    if similarities is not None:
        sims = np.asarray(similarities, dtype=np.float64)[:, :k_used]
        summed = np.where(votes, sims[:, :, None], 0.0).sum(axis=1)  # (Q, C)
        best = np.where(candidates, summed, -np.inf).max(axis=1, keepdims=True)
        candidates &= summed == best
    first_rank = np.where(votes.any(axis=1), votes.argmax(axis=1), k_used)  # (Q, C)
    winner = np.where(candidates, first_rank, k_used + 1).argmin(axis=1)  # (Q,)
    scores = counts / float(k_used)
    rows_tied = np.flatnonzero(tied)
    scores[rows_tied, winner[rows_tied]] += TIE_NUDGE
    return scores / scores.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- evaluation


def evaluate_embeddings(
    *,
    query_emb: npt.ArrayLike,
    query_targets: npt.ArrayLike,
    query_probs: npt.ArrayLike | None,
    gallery_emb: npt.ArrayLike,
    gallery_targets: npt.ArrayLike,
    multi_label: bool,
    codes: Sequence[str],
    names: Sequence[str],
    ks: Sequence[int] = (2, 5, 10),
    knn_k: int = 10,
    exclude_self: bool = False,
    chunk: int = 256,
) -> dict[str, Any]:
    """Evaluate test queries against a gallery (the training set); the result is JSON-ready.

    Keys: ``task``, ``codes``, ``names``, ``classification`` (of ``query_probs``; omitted when
    None), ``retrieval`` (:class:`model.retrieval_metrics.RetrievalScores` as a dict),
    ``knn_classification`` (of the :func:`knn_vote` scores with ``knn_k`` neighbours) and
    ``counts``. ``exclude_self`` is for evaluating a set against itself. Queries are ranked
    ``chunk`` at a time: peak memory is a few ``chunk × gallery`` float64 arrays (about 1 GB
    for 256 queries against ChestX-ray14's 86k training images).
    """
    q_targets = np.asarray(query_targets)
    g_targets = np.asarray(gallery_targets)
    q_emb = np.asarray(query_emb)
    num_queries = q_targets.shape[0]
    if q_emb.shape[0] != num_queries:
        raise ValueError(f"{q_emb.shape[0]} query embeddings but {num_queries} query targets")
    if np.asarray(gallery_emb).shape[0] != g_targets.shape[0]:
        raise ValueError("gallery embeddings and targets differ in length")
    per_query: dict[str, list[npt.NDArray[np.float64]]] = {n: [] for n in metric_names(ks)}
    knn_scores: list[npt.NDArray[np.float64]] = []
    for ranked in ranking_chunks(q_emb, gallery_emb, exclude_self=exclude_self, chunk=chunk):
        stop = ranked.start + ranked.indices.shape[0]
        values = per_query_metrics(
            q_targets[ranked.start : stop],
            g_targets,
            ranked.indices,
            multi_label=multi_label,
            ks=ks,
            chunk=chunk,
        )
        for name, array in values.items():
            per_query[name].append(array)
        knn_scores.append(
            knn_vote(
                ranked.indices,
                g_targets,
                k=knn_k,
                num_classes=len(codes),
                multi_label=multi_label,
                similarities=ranked.similarities,
            )
        )
        logger.debug("retrieval evaluated for %d/%d queries", stop, num_queries)
    if not knn_scores:
        raise ValueError("no queries to evaluate")
    scores = summarise_retrieval(
        {name: np.concatenate(parts) for name, parts in per_query.items()},
        q_targets,
        multi_label=multi_label,
        codes=codes,
        ks=ks,
    )
    report: dict[str, Any] = {
        "task": MULTI_LABEL if multi_label else SINGLE_LABEL,
        "codes": list(codes),
        "names": list(names),
    }
    if query_probs is not None:
        report["classification"] = classification_metrics(
            query_probs, q_targets, multi_label=multi_label, codes=codes, names=names
        )
    report["retrieval"] = asdict(scores)
    report["knn_classification"] = classification_metrics(
        np.concatenate(knn_scores), q_targets, multi_label=multi_label, codes=codes, names=names
    )
    report["counts"] = {
        "queries": num_queries,
        "gallery": int(g_targets.shape[0]),
        "queries_without_relevant": scores.queries_without_relevant,
        "classes": len(codes),
        "knn_k": knn_k,
        "exclude_self": exclude_self,
    }
    logger.info(
        "evaluated %d queries against %d gallery items: mAP micro %.4f, macro %.4f",
        num_queries,
        g_targets.shape[0],
        scores.micro["mAP"],
        scores.macro["mAP"],
    )
    return json_ready(report)


def _number(value: Any) -> float:
    return float(value) if value is not None else float("nan")


def headline(report: Mapping[str, Any]) -> dict[str, float]:
    """The ablation table's columns (nan where undefined or missing).

    Single-label: ``macro_f1``, ``balanced_accuracy``, ``macro_auc``, ``mAP_macro``,
    ``P@10_macro``. Multi-label: ``mean_auroc``, ``mAP_macro``, ``P@10_macro``, ``macro_f1``.
    The precision column uses the largest K when 10 was not evaluated (its key says which).
    """
    classification: Mapping[str, Any] = report.get("classification") or {}
    retrieval: Mapping[str, Any] = report.get("retrieval") or {}
    macro_retrieval: Mapping[str, Any] = retrieval.get("macro") or {}
    ks = [int(k) for k in retrieval.get("ks") or [10]]
    p_k = 10 if 10 in ks else max(ks)
    macro_cls: Mapping[str, Any] = classification.get("macro") or {}
    retrieval_columns = {
        "mAP_macro": _number(macro_retrieval.get("mAP")),
        f"P@{p_k}_macro": _number(macro_retrieval.get(f"P@{p_k}")),
    }
    if report.get("task") == MULTI_LABEL:
        return {
            "mean_auroc": _number(classification.get("mean_auroc")),
            **retrieval_columns,
            "macro_f1": _number(macro_cls.get("f1")),
        }
    return {
        "macro_f1": _number(macro_cls.get("f1")),
        "balanced_accuracy": _number(classification.get("balanced_accuracy")),
        "macro_auc": _number(macro_cls.get("auc")),
        **retrieval_columns,
    }


# --------------------------------------------------------------------------- report files


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _classification_section(heading: str, metrics: Mapping[str, Any]) -> list[str]:
    lines = [f"## {heading}", ""]
    summary: list[tuple[str, Any]] = [
        ("macro precision", metrics["macro"]["precision"]),
        ("macro recall", metrics["macro"]["recall"]),
        ("macro F1", metrics["macro"]["f1"]),
        ("macro AUC", metrics["macro"]["auc"]),
        ("weighted F1", metrics["weighted"]["f1"]),
    ]
    if metrics["task"] == MULTI_LABEL:
        summary += [("micro F1", metrics["micro"]["f1"]), ("sample F1", metrics["samples_f1"])]
        summary += [("threshold", metrics["threshold"])]
    else:
        summary += [
            ("accuracy", metrics["accuracy"]),
            ("balanced accuracy", metrics["balanced_accuracy"]),
        ]
    lines += _table(["metric", "value"], summary)
    rows = [
        [code, v["name"], v["precision"], v["recall"], v["f1"], v["auc"], v["support"]]
        for code, v in metrics["per_class"].items()
    ]
    lines += _table(["code", "name", "precision", "recall", "F1", "AUC", "support"], rows)
    return lines


def _confusion_section(metrics: Mapping[str, Any], codes: Sequence[str]) -> list[str]:
    normalised = metrics["confusion_matrix"]["normalised"]
    counts = metrics["confusion_matrix"]["counts"]
    lines = [
        "## Confusion matrix (model head)",
        "",
        "Rows: true class; columns: predicted class. Each cell: fraction of the row (count).",
        "",
    ]
    rows = [
        [code, *(f"{frac:.2f} ({n})" for frac, n in zip(fractions, row_counts, strict=True))]
        for code, fractions, row_counts in zip(codes, normalised, counts, strict=True)
    ]
    lines += _table(["true \\ predicted", *codes], rows)
    return lines


def _markdown(report: Mapping[str, Any], title: str) -> str:
    codes: list[str] = list(report.get("codes") or [])
    names: list[str] = list(report.get("names") or codes)
    name_of = dict(zip(codes, names, strict=True))
    name_of.setdefault(NO_FINDING, "no finding (all-zero label row)")
    counts: Mapping[str, Any] = report.get("counts") or {}
    lines = [f"# {title}", ""]
    lines += [
        f"Task: {report.get('task', '?')}; {counts.get('queries', '?')} queries against "
        f"{counts.get('gallery', '?')} gallery items; k-NN vote with k = "
        f"{counts.get('knn_k', '?')}; {counts.get('queries_without_relevant', 0)} queries "
        "without any relevant gallery item (left out of R@K and mAP).",
        "",
        "## Headline",
        "",
    ]
    head = headline(report)
    lines += _table(list(head), [list(head.values())])
    if "classification" in report:
        lines += _classification_section("Classification (model head)", report["classification"])
    retrieval: Mapping[str, Any] | None = report.get("retrieval")
    if retrieval:
        names_r = metric_names(retrieval["ks"])
        lines += [
            "## Retrieval",
            "",
            "Relevant: same class (single-label) or at least one shared "
            "finding, normal matching normal (multi-label).",
            "",
        ]
        lines += _table(
            ["average", *names_r],
            [
                ["micro", *(retrieval["micro"][n] for n in names_r)],
                ["macro", *(retrieval["macro"][n] for n in names_r)],
            ],
        )
        rows = [
            [code, name_of.get(code, code), scores["queries"], *(scores[n] for n in names_r)]
            for code, scores in retrieval["per_class"].items()
        ]
        lines += _table(["code", "name", "queries", *names_r], rows)
    if "knn_classification" in report:
        lines += _classification_section(
            "k-NN vote classification (retrieved neighbours)", report["knn_classification"]
        )
    if "classification" in report and "confusion_matrix" in report["classification"]:
        lines += _confusion_section(report["classification"], codes)
    return "\n".join(lines)


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # attaches the non-interactive canvas; pyplot is never imported
    return figure


def _plot_confusion(metrics: Mapping[str, Any], codes: Sequence[str], path: Path) -> None:
    matrix = np.asarray(metrics["confusion_matrix"]["normalised"], dtype=np.float64)
    size = 2.0 + 0.7 * len(codes)
    figure = _new_figure(size + 1.0, size)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of true class")
    ticks = np.arange(len(codes))
    axes.set_xticks(ticks, labels=list(codes), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(codes))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Normalised confusion matrix")
    for (row, col), value in np.ndenumerate(matrix):
        colour = "white" if value > 0.5 else "black"
        axes.text(col, row, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=8)
    figure.savefig(path, dpi=120)


def _plot_roc(roc: Mapping[str, Any], per_class: Mapping[str, Any], path: Path) -> None:
    from matplotlib import colormaps

    figure = _new_figure(7.0, 6.0)
    axes = figure.add_subplot()
    palette = colormaps["tab10" if len(roc) <= 10 else "tab20"]
    for i, (code, curve) in enumerate(roc.items()):
        auc = per_class.get(code, {}).get("auc")
        # tab20 comes in dark/light pairs: take all the dark shades first.
        colour = palette(i % 10) if len(roc) <= 10 else palette((2 * i) % 20 + (2 * i) // 20 % 2)
        axes.plot(
            curve["fpr"],
            curve["tpr"],
            color=colour,
            linewidth=1.5,
            label=f"{code} (AUC {_fmt(auc)})",
        )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC curves (one vs rest)")
    axes.legend(loc="lower right", fontsize=8)
    figure.savefig(path, dpi=120)


def _plot_prf(per_class: Mapping[str, Any], path: Path) -> None:
    codes = list(per_class)
    x = np.arange(len(codes))
    width = 0.27
    figure = _new_figure(max(6.0, 0.8 * len(codes) + 2.0), 4.5)
    axes = figure.add_subplot()
    for offset, (key, label) in zip(
        (-width, 0.0, width),
        (("precision", "precision"), ("recall", "recall"), ("f1", "F1")),
        strict=True,
    ):
        axes.bar(x + offset, [per_class[c][key] for c in codes], width, label=label)
    axes.set_xticks(x, labels=codes, rotation=45, ha="right")
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("score")
    axes.set_title("Per-class precision, recall and F1")
    figure.legend(loc="outside lower center", ncols=3)
    figure.savefig(path, dpi=120)


def write_report(
    report: Mapping[str, Any],
    out_dir: Path,
    *,
    title: str,
    roc_data: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write the report files into ``out_dir`` (created) and return their paths.

    ``report.json``; ``report.md``; ``per_class_prf.png``; ``roc_curves.png`` (from
    ``report["classification"]["roc"]``, or ``roc_data`` — code → ``{"fpr", "tpr"}`` — when
    given); ``confusion_matrix.png`` (single-label only). Plots whose data is missing (no
    ``classification`` section, no class with a defined ROC curve) are skipped.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean = json_ready(report)
    written: list[Path] = []

    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    written.append(json_path)
    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(clean, title) + "\n", encoding="utf-8")
    written.append(md_path)

    classification: Mapping[str, Any] | None = clean.get("classification")
    if classification:
        prf_path = out_dir / "per_class_prf.png"
        _plot_prf(classification["per_class"], prf_path)
        written.append(prf_path)
        roc = json_ready(roc_data) if roc_data is not None else classification.get("roc")
        if roc:
            roc_path = out_dir / "roc_curves.png"
            _plot_roc(roc, classification["per_class"], roc_path)
            written.append(roc_path)
        if "confusion_matrix" in classification:
            cm_path = out_dir / "confusion_matrix.png"
            _plot_confusion(classification, clean.get("codes") or [], cm_path)
            written.append(cm_path)
    logger.info("report written to %s (%d files)", out_dir, len(written))
    return written
