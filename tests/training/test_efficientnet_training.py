"""Training EfficientNet-Lite0 from its ImageNet weights writes a normal serving checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.efficientnet import INPUT_MEAN, INPUT_STD, EfficientNetLite0, read_imagenet_state
from training.config import TrainConfigError, load_config
from training.loop import train


def lite_overrides(data: Path, out: Path, cache: Path) -> list[str]:
    settings = {
        "data.path": str(data),
        "data.cache_dir": str(cache),
        "data.workers": 0,
        "out_dir": str(out),
        "model.architecture": "efficientnet_lite0",
        "model.pretrained": "efficientnet_lite0_imagenet",
        "model.image_size": 32,
        "model.embed_dim": 32,
        "batch_size": 12,
        "samples_per_class": 4,
        "batches_per_epoch": 2,
        "device": "cpu",
        "tensorboard": False,
        "phases": "[{epochs: 2, ce: 1, contrastive: 0.5, triplet: 0.5}]",
    }
    return [f"{k}={v}" for k, v in settings.items()]


def test_a_pretrained_efficientnet_trains_into_a_serving_checkpoint(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    cfg = load_config(None, lite_overrides(tiny_manifest, tmp_path / "run", tmp_path / "cache"))
    result = train(cfg, progress=False)
    assert result.best_path == tmp_path / "run" / "best.safetensors"
    loaded = load_checkpoint(result.best_path)
    assert isinstance(loaded.model, EfficientNetLite0)
    assert loaded.meta.model.architecture == "efficientnet_lite0"
    assert loaded.meta.preprocessing.mean == INPUT_MEAN
    assert loaded.meta.preprocessing.std == INPUT_STD
    assert loaded.meta.training["config"]["model"]["pretrained"] == "efficientnet_lite0_imagenet"
    # it started from the ImageNet weights: a few steps move the stem only slightly
    stem = loaded.model.backbone._conv_stem.weight.detach()
    imagenet = read_imagenet_state()["_conv_stem.weight"]
    assert not torch.equal(stem, imagenet)
    assert float((stem - imagenet).norm() / imagenet.norm()) < 0.1


def test_the_imagenet_weights_need_the_efficientnet_architecture() -> None:
    with pytest.raises(TrainConfigError, match=r"needs model\.architecture efficientnet_lite0"):
        load_config(None, ["model.pretrained=efficientnet_lite0_imagenet"])
    with pytest.raises(TrainConfigError, match="'vit', 'efficientnet_lite0' or 'cnn'"):
        load_config(None, ["model.architecture=resnet50"])
