"""The evaluation report: its headline columns and the files ``report.json`` and ``report.md``.

:func:`write_report` writes ``report.json`` (the whole result; NaN is written as ``null``),
``report.md`` (headline, per-class and retrieval tables, confusion matrix) and the PNG plots
of :mod:`training.plots`. :func:`headline` picks the columns of the ablation table and of
the validation record of every epoch.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labels import Task
from metrics.classification import report_task
from metrics.json_values import json_ready
from metrics.retrieval import NO_FINDING, metric_names
from training.plots import plot_confusion, plot_prf, plot_roc

__all__ = ["headline", "write_report"]

logger = logging.getLogger(__name__)


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
    if report_task(report) is Task.MULTI_LABEL:
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


# --------------------------------------------------------------------------- Markdown


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
    if report_task(metrics) is Task.MULTI_LABEL:
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


def _retrieval_section(retrieval: Mapping[str, Any], name_of: Mapping[str, str]) -> list[str]:
    names_r = metric_names(retrieval["ks"])
    lines = [
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
    return lines


def markdown(report: Mapping[str, Any], title: str) -> str:
    """``report.md``: headline, classification, retrieval and k-NN tables, confusion matrix."""
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
        lines += _retrieval_section(retrieval, name_of)
    if "knn_classification" in report:
        lines += _classification_section(
            "k-NN vote classification (retrieved neighbours)", report["knn_classification"]
        )
    if "classification" in report and "confusion_matrix" in report["classification"]:
        lines += _confusion_section(report["classification"], codes)
    return "\n".join(lines)


# --------------------------------------------------------------------------- files


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
    md_path.write_text(markdown(clean, title) + "\n", encoding="utf-8")
    written.append(md_path)

    classification: Mapping[str, Any] | None = clean.get("classification")
    if classification:
        per_class = classification["per_class"]
        prf_path = out_dir / "per_class_prf.png"
        plot_prf(per_class, prf_path)
        written.append(prf_path)
        roc = json_ready(roc_data) if roc_data is not None else classification.get("roc")
        if roc:
            roc_path = out_dir / "roc_curves.png"
            legend = {
                code: f"{code} (AUC {_fmt(per_class.get(code, {}).get('auc'))})" for code in roc
            }
            plot_roc(roc, legend, roc_path)
            written.append(roc_path)
        if "confusion_matrix" in classification:
            cm_path = out_dir / "confusion_matrix.png"
            plot_confusion(classification, clean.get("codes") or [], cm_path)
            written.append(cm_path)
    logger.info("report written to %s (%d files)", out_dir, len(written))
    return written
