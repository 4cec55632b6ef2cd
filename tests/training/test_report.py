"""The report: headline columns, report.json, report.md and the PNG plots."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from labels import Task
from metrics.classification import classification_metrics
from support.reports import single_label_report
from training.report import headline, write_report


def test_headline_columns() -> None:
    report = single_label_report()
    head = headline(report)
    assert list(head) == ["macro_f1", "balanced_accuracy", "macro_auc", "mAP_macro", "P@10_macro"]
    assert head["mAP_macro"] == report["retrieval"]["macro"]["mAP"]
    assert head["balanced_accuracy"] == 1.0
    multi = headline({"task": "multi-label", "retrieval": {"ks": [2, 5], "macro": {}}})
    assert list(multi) == ["mean_auroc", "mAP_macro", "P@5_macro", "macro_f1"]
    assert all(math.isnan(v) for v in multi.values())


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
    report = single_label_report(noise=0.6, logit_noise=4.0)  # imperfect, distinct numbers
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
            probs,
            targets,
            task=Task.MULTI_LABEL,
            codes=["x", "y"],
            names=["finding x", "finding y"],
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
