"""Training the hybrid ViT: its stem from the ImageNet weights, [-1, 1] inputs, a stem
learning rate of its own, and a normal serving checkpoint at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_loop import tiny_overrides

from labels import Task
from model.checkpoint import load_checkpoint
from model.efficientnet import (
    INPUT_MEAN,
    INPUT_STD,
    LiteStem,
    PretrainedWeightsError,
    read_imagenet_state,
)
from model.vit import MultiScaleViT
from training.config import TrainConfigError, load_config
from training.loop import Trainer, train
from training.schedule import set_lr
from training.setup import build_network, optimizer


def hybrid_overrides(data: Path, out: Path, cache: Path, **extra: object) -> list[str]:
    """test_loop's tiny run with the EfficientNet-Lite0 stem from its ImageNet weights,
    one short phase and no TensorBoard."""
    hybrid: dict[str, object] = {
        "model__stem": "efficientnet_lite0",
        "model__pretrained": "efficientnet_lite0_imagenet",
        "batches_per_epoch": 2,
        "tensorboard": False,
        "phases": "[{epochs: 2, ce: 1, contrastive: 0.5, triplet: 0.5}]",
    }
    return tiny_overrides(data, out, cache, **(hybrid | extra))


def test_a_hybrid_vit_trains_from_imagenet_into_a_serving_checkpoint(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    overrides = hybrid_overrides(tiny_manifest, tmp_path / "run", tmp_path / "cache")
    result = train(load_config(None, overrides), progress=False)
    loaded = load_checkpoint(result.best_path)  # type: ignore[arg-type]
    assert isinstance(loaded.model, MultiScaleViT)
    assert isinstance(loaded.model.stem, LiteStem)
    assert loaded.meta.model.stem == "efficientnet_lite0"
    assert (loaded.meta.preprocessing.mean, loaded.meta.preprocessing.std) == (
        INPUT_MEAN,
        INPUT_STD,
    )
    stem = loaded.model.stem._conv_stem.weight.detach()
    imagenet = read_imagenet_state()["_conv_stem.weight"]
    moved = float((stem - imagenet).norm() / imagenet.norm())
    assert 0 < moved < 0.05  # it started from ImageNet and trained a few steps


def test_the_stem_learns_at_its_own_rate(tiny_manifest: Path, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        hybrid_overrides(tiny_manifest, tmp_path, tmp_path, model__stem_lr_scale=0.1),
    )
    net, _ = build_network(cfg, 3, Task.SINGLE_LABEL)
    adam = optimizer(net, cfg)
    set_lr(adam, 1e-3)
    stem_group, rest_group = adam.param_groups
    assert stem_group["lr"] == pytest.approx(1e-4)
    assert rest_group["lr"] == pytest.approx(1e-3)
    assert isinstance(net, MultiScaleViT)
    assert net.stem is not None
    stem_ids = {id(p) for p in net.stem.parameters()}
    assert {id(p) for p in stem_group["params"]} == stem_ids
    assert len(stem_group["params"]) + len(rest_group["params"]) == len(list(net.parameters()))
    plain = load_config(None, hybrid_overrides(tiny_manifest, tmp_path, tmp_path))
    assert len(optimizer(net, plain).param_groups) == 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.stem_lr_scale", "0", "stem_lr_scale must be positive"),
        ("model.stem", "resnet", "unknown stem"),
        ("model.stem", "patch", "needs model.architecture efficientnet_lite0 or model.stem"),
        ("model.architecture", "cnn", "model.stem efficientnet_lite0 is for the ViT"),
    ],
)
def test_bad_hybrid_settings_are_refused(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    overrides = hybrid_overrides(tmp_path, tmp_path, tmp_path)
    with pytest.raises(TrainConfigError, match=message):
        load_config(None, [*overrides, f"{key}={value}"])


def test_a_resumed_hybrid_run_no_longer_needs_its_init_file(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    """The stem's source may be gone once a run has a state: the state holds every weight."""
    teacher = tmp_path / "teacher.pth"
    torch.save(read_imagenet_state(), teacher)
    overrides = hybrid_overrides(
        tiny_manifest, tmp_path / "run", tmp_path / "cache", model__pretrained=teacher
    )
    cfg = load_config(None, overrides)
    Trainer(cfg, progress=False).run(stop_after=1)
    teacher.unlink()
    result = Trainer(cfg, progress=False).run(resume=True)
    assert result.epochs_run == 2
    fresh = load_config(
        None,
        hybrid_overrides(
            tiny_manifest, tmp_path / "new", tmp_path / "c", model__pretrained=teacher
        ),
    )
    with pytest.raises(PretrainedWeightsError, match="no weights file"):
        Trainer(fresh, progress=False)
