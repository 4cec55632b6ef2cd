"""``medret train`` + ``medret evaluate`` on every kind of dataset the issue names:
generated fixtures in each native layout (fast), then the real images (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archives.label_sets import NIH_FINDINGS
from labels import Task
from model.checkpoint import load_checkpoint
from training.commands import evaluate_checkpoint
from training.config import load_config
from training.loop import train


def quick_config(
    data: Path, out: Path, cache: Path, *, size: int = 32, bpe: int = 2, batch: int = 8, k: int = 2
) -> list[str]:
    return [
        f"data.path={data}",
        f"data.cache_dir={cache}",
        "data.workers=0",
        f"out_dir={out}",
        "model.variant=tiny",
        "model.depth=1",
        f"model.image_size={size}",
        "model.embed_dim=32",
        f"batch_size={batch}",
        f"samples_per_class={k}",
        f"batches_per_epoch={bpe}",
        "device=cpu",
        "tensorboard=false",
        "phases=[{epochs: 1, ce: 0.2, contrastive: 1, triplet: 1, lr_decay: 4},"
        " {epochs: 1, ce: 1, contrastive: 0.2, triplet: 0.2, lr_decay: 64}]",
    ]


def test_multi_label_nih_layout(tiny_nih: Path, tmp_path: Path) -> None:
    result = train(
        load_config(None, quick_config(tiny_nih, tmp_path / "run", tmp_path / "c")), progress=False
    )
    meta = load_checkpoint(result.best_path).meta
    assert meta.model.task is Task.MULTI_LABEL
    assert meta.labels.codes == NIH_FINDINGS  # all 14 findings, even those absent here
    report = evaluate_checkpoint(
        result.best_path,
        str(tiny_nih),
        tmp_path / "rep",
        split="val",
        cache_dir=str(tmp_path / "c"),
        workers=0,
    )
    per_class = report["classification"]["per_class"]
    assert per_class["Effusion"]["auc"] is not None
    assert per_class["Mass"]["auc"] is None  # no validation image has a mass
    assert 0.0 <= report["classification"]["mean_auroc"] <= 1.0
    assert (tmp_path / "rep" / "roc_curves.png").exists()


def test_medmnist_npz_layout(tiny_npz: Path, tmp_path: Path) -> None:
    result = train(
        load_config(None, quick_config(tiny_npz, tmp_path / "run", tmp_path / "c")), progress=False
    )
    meta = load_checkpoint(result.best_path).meta
    assert meta.labels.codes == ("normal", "pneumonia")
    assert meta.labels.names == ("Normal", "Pneumonia")
    report = evaluate_checkpoint(
        result.best_path, str(tiny_npz), tmp_path / "rep", cache_dir=str(tmp_path / "c"), workers=0
    )
    counts = report["counts"]
    assert counts["queries"] == 12  # the test split of the npz
    assert counts["gallery"] == 40


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "split", "task"),
    [
        ("ham10000", "test", Task.SINGLE_LABEL),
        ("pneumoniamnist", "test", Task.SINGLE_LABEL),
        ("chestxray14", "val", Task.MULTI_LABEL),
    ],
)
def test_real_datasets_train_and_evaluate(
    shared_data: Path, tmp_path: Path, dataset: str, split: str, task: Task
) -> None:
    data = shared_data / dataset
    cfg = quick_config(data, tmp_path / "run", tmp_path / "cache", size=32, bpe=2, batch=16, k=2)
    result = train(load_config(None, cfg), progress=False)
    report = evaluate_checkpoint(
        result.best_path,
        str(data),
        tmp_path / "rep",
        split=split,
        cache_dir=str(tmp_path / "cache"),
        workers=2,
    )
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["dataset"]["query_split"] == split
    retrieval = report["retrieval"]
    assert retrieval["queries"] > 0
    assert 0.0 <= retrieval["macro"]["mAP"] <= 1.0
    if task is Task.MULTI_LABEL:
        assert 0.0 <= report["classification"]["mean_auroc"] <= 1.0
    else:
        assert 0.0 <= report["classification"]["balanced_accuracy"] <= 1.0
