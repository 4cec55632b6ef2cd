"""What a run is built from, one function per part, each named for what it returns.

:class:`training.loop.Trainer` calls them in this order (the order matters: the network's
initial weights come from the seed set just before it is built)::

    preprocessing → initial_network → training_loss (the teacher: training/teacher.py)
      → phase_schedule → optimizer → batch_sampler
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imaging.preprocessing import PreprocessConfig
from labels import LabelSpace, Task
from model.architectures import build_model
from model.config import ModelConfig
from model.efficientnet import (
    IMAGENET_WEIGHTS,
    INPUT_MEAN,
    INPUT_STD,
    EfficientNetLite0,
    LiteStem,
    load_imagenet_weights,
    load_stem_weights,
)
from model.pretrained import load_pretrained_vit
from model.vit import MultiScaleViT
from training.cnn import ResNet18Like
from training.config import TrainConfig
from training.distributed import DistEnv
from training.losses import MultiLoss, balanced_class_weights
from training.sampler import (
    ClassBalancedBatchSampler,
    ShuffledBatchSampler,
    class_lists_from_targets,
)
from training.schedule import PhaseSchedule, make_adam
from training.state import STATE_FILE

CNN_BASE_WIDTH = {"tiny": 16, "small": 32, "base": 64}
"""The CNN baseline's first-stage width per model variant (32 for any other)."""


def preprocessing(cfg: TrainConfig) -> PreprocessConfig:
    """The square canvas of the config's image size, with the standard normalisation (the
    [-1, 1] one its ImageNet weights expect for EfficientNet-Lite0 and for the hybrid ViT
    whose stem is taken from it)."""
    size = (cfg.model.image_size, cfg.model.image_size)
    if "efficientnet_lite0" in (cfg.model.architecture, cfg.model.stem):
        return PreprocessConfig(image_size=size, mean=INPUT_MEAN, std=INPUT_STD)
    return PreprocessConfig(image_size=size)


def build_network(
    cfg: TrainConfig, num_classes: int, task: Task, *, load_pretrained: bool = True
) -> tuple[nn.Module, ModelConfig]:
    """The ViT of the config (optionally from pretrained ViT/16 weights), EfficientNet-Lite0
    (optionally from the packaged ImageNet weights, ``pretrained: efficientnet_lite0_imagenet``,
    or a state dict of the same layout at a path), the hybrid ViT (its stem from either of
    those, or from an EfficientNet-Lite0 checkpoint), or the CNN baseline."""
    m = cfg.model
    model_cfg = m.model_config(num_classes, task)
    if m.architecture == "cnn":
        base = CNN_BASE_WIDTH.get(m.variant, 32)
        return ResNet18Like(
            num_classes, embed_dim=m.embed_dim, base_width=base, dropout=m.dropout
        ), model_cfg
    net = build_model(model_cfg)
    weights = None if m.pretrained == IMAGENET_WEIGHTS else m.pretrained
    if not load_pretrained:
        return net, model_cfg
    if isinstance(net, EfficientNetLite0):
        if m.pretrained:
            load_imagenet_weights(net, weights)
    elif isinstance(net.stem, LiteStem):
        if m.pretrained:
            load_stem_weights(net.stem, weights)
    elif m.pretrained:
        load_pretrained_vit(net, m.pretrained)
    return net, model_cfg


def initial_network(
    cfg: TrainConfig, labels: LabelSpace, task: Task, device: torch.device
) -> tuple[nn.Module, ModelConfig]:
    """The network on ``device`` with the seed's initial weights (the same on every rank).

    When the run folder holds a training state, its weights replace these (a resumed run;
    or a refused one, without ``--resume``), so the pretrained file is not read: a
    resumed stage needs no longer the earlier stage it started from."""
    torch.manual_seed(cfg.seed)
    resumable = (Path(cfg.out_dir) / STATE_FILE).is_file()
    net, model_cfg = build_network(cfg, len(labels.codes), task, load_pretrained=not resumable)
    if cfg.model.architecture in ("efficientnet_lite0", "cnn") or cfg.model.stem != "patch":
        # Convolutions train 1.4-1.8x faster on CPU with channels-last weights (measured on
        # EfficientNet-Lite0 at 160 px, 2 cores); the saved checkpoint is contiguous again.
        # (torch's type stubs lack the memory_format keyword of Module.to.)
        fast = net.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return fast, model_cfg
    return net.to(device), model_cfg


def training_loss(
    cfg: TrainConfig,
    train_targets: np.ndarray,
    labels: LabelSpace,
    task: Task,
    device: torch.device,
) -> MultiLoss:
    """The phased multi-loss, with balanced class weights when the config asks for them."""
    class_weights = None
    if cfg.loss.class_weights == "balanced":
        class_weights = balanced_class_weights(train_targets, len(labels.codes), task)
    return MultiLoss(
        task,
        contrastive_margin=cfg.loss.contrastive_margin,
        triplet_margin=cfg.loss.triplet_margin,
        mining=cfg.loss.mining,
        class_weights=class_weights,
        temperature=cfg.loss.temperature,
        distill_hard=cfg.loss.distill_targets == "hard",
        geometry_temperature=cfg.loss.geometry_temperature,
    ).to(device)


def phase_schedule(cfg: TrainConfig) -> PhaseSchedule:
    """Loss weights and learning rate per epoch, from the config's phases."""
    return PhaseSchedule([p.to_phase() for p in cfg.phases], base_lr=cfg.lr)


def optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam over every parameter of the network (the schedule sets its learning rate); a
    hybrid ViT's stem at ``model.stem_lr_scale`` times it."""
    scale = cfg.model.stem_lr_scale
    if not isinstance(net, MultiScaleViT) or net.stem is None or scale == 1.0:
        return make_adam(net.parameters(), cfg.lr)
    stem = net.stem
    inside = {id(p) for p in stem.parameters()}
    rest = [p for p in net.parameters() if id(p) not in inside]
    groups: list[dict[str, Any]] = [
        {"params": list(stem.parameters()), "lr_scale": scale},
        {"params": rest},
    ]
    return make_adam(groups, cfg.lr)


def batch_sampler(
    cfg: TrainConfig, train_targets: np.ndarray, task: Task, env: DistEnv
) -> ClassBalancedBatchSampler | ShuffledBatchSampler:
    """This rank's batches of the training split: P classes × K samples, or a shuffle."""
    lists = class_lists_from_targets(train_targets, task)
    sampler_cls = ClassBalancedBatchSampler if cfg.sampler == "balanced" else ShuffledBatchSampler
    return sampler_cls(
        lists,
        cfg.batch_size,
        cfg.samples_per_class,
        seed=cfg.seed,
        rank=env.rank,
        world_size=env.world_size,
        batches_per_epoch=cfg.batches_per_epoch,
    )
