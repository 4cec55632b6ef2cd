"""Chest X-rays: a linear probe on the frozen ImageNet EfficientNet-Lite0 features.

    python bench/chest_probe.py [--data ../shared/data/chestxray14] [--size 224]

Does the pretrained start carry chest findings without fine-tuning? Every image of
``--data`` (read by the product's archive reader, split by patient) is decoded and
letterboxed as the indexer does (``archives.canvas.prepare_sample``), and the packaged
ImageNet backbone (``model.efficientnet``, loaded strictly) gives its pooled 1,280
features through the one inference path (``model.inference.infer``); unreadable images
are counted and left out. One logistic regression per finding
(standardised features, class-balanced weights) is fitted on the training split; its
regularisation C is chosen by 5-fold cross-validation grouped by patient *within* the
training split, so the validation patients decide nothing. Prints, for each C, the
cross-validated and the validation mean AUROC over the findings with positives.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from archives.canvas import prepare_sample  # noqa: E402
from archives.records import ArchiveError  # noqa: E402
from archives.registry import read_archive  # noqa: E402
from imaging.preprocessing import PreprocessConfig  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.efficientnet import (  # noqa: E402
    EfficientNetLite0,
    PretrainedWeightsError,
    load_imagenet_weights,
)
from model.inference import infer  # noqa: E402

GRID_C = (0.0003, 0.001, 0.003, 0.01, 0.03)


def features(data: Path, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels (N, findings) 0/1, patient groups, splits) of every readable image."""
    archive = read_archive(data)
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=len(archive.codes), architecture="efficientnet_lite0", image_size=size
    )
    network = EfficientNetLite0(cfg)
    load_imagenet_weights(network)
    network.eval()
    preprocessing = PreprocessConfig(image_size=(size, size))
    cpu = torch.device("cpu")
    rows: list[torch.Tensor] = []
    labels: list[list[bool]] = []
    groups: list[str] = []
    splits: list[str] = []
    batch: list[torch.Tensor] = []
    unreadable = 0

    def flush() -> None:
        found = infer(network, torch.stack(batch), preprocessing, cpu, with_features=True)
        assert found.features is not None
        rows.append(found.features)
        batch.clear()

    for sample in archive.samples:
        prepared = prepare_sample(sample, (size, size))
        if prepared.canvas is None:
            unreadable += 1
            continue
        batch.append(prepared.canvas)
        labels.append([code in sample.labels for code in archive.codes])
        groups.append(sample.group or sample.key)
        splits.append(sample.split)
        if len(batch) == 32:
            flush()
    if batch:
        flush()
    if unreadable:
        print(f"{unreadable} unreadable images left out")
    if not rows:
        raise SystemExit(f"{data}: no readable image")
    return (
        torch.cat(rows).numpy(),
        np.array(labels, dtype=int),
        np.array(groups),
        np.array(splits),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "chestxray14"
    )
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.size < 32:
        parser.error(f"--size must be at least 32 px, got {args.size}")
    torch.set_num_threads(2)
    start = time.perf_counter()
    try:
        x, y, groups, splits = features(args.data, args.size)
    except (ArchiveError, PretrainedWeightsError) as exc:
        raise SystemExit(f"chest_probe: {exc}") from None
    if not (splits == "train").any() or not (splits == "val").any():
        raise SystemExit(f"{args.data}: needs both a training and a validation split")
    train, val = splits == "train", splits == "val"
    print(
        f"{len(x)} images at {args.size} px ({train.sum()} train, {val.sum()} validation),"
        f" features in {time.perf_counter() - start:.0f} s"
    )
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    for c in GRID_C:
        cross, held = [], []
        for j in range(y.shape[1]):
            target = y[:, j]
            if target[train].sum() < 2 or target[val].sum() == 0:
                continue
            folds = []
            for fit, test in GroupKFold(5).split(x[train], target[train], groups[train]):
                if target[train][test].sum() == 0 or target[train][fit].sum() == 0:
                    continue
                model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
                model.fit(x[train][fit], target[train][fit])
                folds.append(
                    roc_auc_score(target[train][test], model.decision_function(x[train][test]))
                )
            cross.append(np.mean(folds))
            model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
            model.fit(x[train], target[train])
            held.append(roc_auc_score(target[val], model.decision_function(x[val])))
        print(
            f"C={c:g}: cross-validated (train patients) mean AUROC {np.mean(cross):.3f};"
            f" validation {np.mean(held):.3f} over {len(held)} findings"
        )


if __name__ == "__main__":
    main()
