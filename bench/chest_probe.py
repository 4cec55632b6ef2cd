"""Chest X-rays: a linear probe on the frozen ImageNet EfficientNet-Lite0 features.

    python bench/chest_probe.py [--data ../shared/data/chestxray14] [--size 224]

Does the pretrained start carry chest findings without fine-tuning? Every image of
``--data`` (read by the product's archive reader, split by patient) is decoded and
letterboxed as the service does, and the packaged ImageNet backbone (``model.efficientnet``,
loaded strictly) gives its pooled 1,280 features. One logistic regression per finding
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

from archives.registry import read_archive  # noqa: E402
from imaging.decode import decode_file  # noqa: E402
from imaging.limits import DEFAULT_LIMITS  # noqa: E402
from imaging.preprocessing import PreprocessConfig, fit_to_canvas, normalise  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.efficientnet import EfficientNetLite0, load_imagenet_weights  # noqa: E402

GRID_C = (0.0003, 0.001, 0.003, 0.01, 0.03)


def features(data: Path, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels (N, findings) 0/1, patient groups, splits) of every image."""
    archive = read_archive(data)
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=len(archive.codes), architecture="efficientnet_lite0", image_size=size
    )
    network = EfficientNetLite0(cfg)
    load_imagenet_weights(network)
    network.eval()
    preprocessing = PreprocessConfig(image_size=(size, size))
    rows: list[np.ndarray] = []
    labels: list[list[bool]] = []
    groups: list[str] = []
    splits: list[str] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        with torch.no_grad():
            inputs = normalise(torch.stack(batch), preprocessing)
            rows.append(network.forward_features(inputs).numpy())
        batch.clear()

    for sample in archive.samples:
        assert sample.path is not None
        batch.append(fit_to_canvas(decode_file(sample.path, DEFAULT_LIMITS).pixels, (size, size)))
        labels.append([code in sample.labels for code in archive.codes])
        groups.append(sample.group or sample.key)
        splits.append(sample.split)
        if len(batch) == 32:
            flush()
    if batch:
        flush()
    return np.concatenate(rows), np.array(labels, dtype=int), np.array(groups), np.array(splits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data" / "chestxray14"
    )
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.perf_counter()
    x, y, groups, splits = features(args.data, args.size)
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
