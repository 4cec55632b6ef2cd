"""The training run's typed configuration: a YAML file, then ``--set key=value`` overrides.

The resolved :class:`TrainConfig` is saved in every training state and, as a dict, in
the exported checkpoint's training summary, so a run can always be reproduced.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from labels import Task
from model.config import ConfigError, ModelConfig
from training.augment import AugmentConfig
from training.losses import LossWeights
from training.schedule import Phase


class TrainConfigError(ValueError):
    """A configuration that cannot describe a run."""


@dataclass(frozen=True)
class DataConfig:
    path: str = ""
    layout: str = "auto"
    cache_dir: str = "runs/cache"  # decoded, letterboxed pixels shared by every run
    val_fraction: float = 0.1  # used only by layouts without their own validation split
    workers: int = 2  # processes decoding images while the cache is built


@dataclass(frozen=True)
class ModelSection:
    variant: str = "small"
    depth: int | None = None  # None: the variant's 12 blocks
    image_size: int = 224
    embed_dim: int = 256
    multiscale: bool = True
    dropout: float = 0.1
    # plain ViT/16 weights to start from; for EfficientNet-Lite0 "efficientnet_lite0_imagenet"
    # (the packaged ImageNet weights) or a state dict of that layout
    pretrained: str | None = None
    # "vit", "efficientnet_lite0", or "cnn" (the ResNet-18-style baseline of the ablation)
    architecture: str = "vit"
    # the ViT's patch embedding: "patch" (linear, 16-px patches) or "efficientnet_lite0"
    # (the hybrid ViT: EfficientNet-Lite0's first 11 blocks, then a 1×1 projection; its
    # weights come from ``pretrained``: efficientnet_lite0_imagenet or an EfficientNet-Lite0
    # checkpoint such as the recipe's teacher)
    stem: str = "patch"
    # the stem's learning rate as a share of the schedule's (a pretrained stem may move
    # more slowly than the fresh transformer); 1 for networks without one
    stem_lr_scale: float = 1.0

    def model_config(self, num_classes: int, task: Task = Task.SINGLE_LABEL) -> ModelConfig:
        """The network's :class:`ModelConfig` for this section (the CNN baseline, which has
        none of its own, is described by the ViT fields)."""
        overrides: dict[str, Any] = {
            "image_size": self.image_size,
            "embed_dim": self.embed_dim,
            "multiscale": self.multiscale,
            "dropout": self.dropout,
            "task": task,
        }
        if self.depth is not None:
            overrides["depth"] = self.depth
        if self.architecture == "efficientnet_lite0":
            overrides["architecture"] = self.architecture
        if self.stem != "patch":
            overrides["stem"] = self.stem
        return ModelConfig.from_variant(self.variant, num_classes=num_classes, **overrides)


@dataclass(frozen=True)
class PhaseConfig:
    epochs: int = 70
    ce: float = 1.0
    contrastive: float = 0.0
    triplet: float = 0.0
    distill: float = 0.0
    geometry: float = 0.0  # the teacher's in-batch similarity structure (training/losses.py)
    lr_decay: float = 4.0

    def to_phase(self) -> Phase:
        weights = LossWeights(
            ce=self.ce,
            contrastive=self.contrastive,
            triplet=self.triplet,
            distill=self.distill,
            geometry=self.geometry,
        )
        return Phase(epochs=self.epochs, weights=weights, lr_decay=self.lr_decay)


def default_phases() -> tuple[PhaseConfig, ...]:
    """The paper's three phases of 70 epochs: metric losses first, cross-entropy last."""
    return (
        PhaseConfig(epochs=70, ce=0.2, contrastive=1.0, triplet=1.0, lr_decay=4.0),
        PhaseConfig(epochs=70, ce=0.6, contrastive=0.6, triplet=0.6, lr_decay=16.0),
        PhaseConfig(epochs=70, ce=1.0, contrastive=0.2, triplet=0.2, lr_decay=64.0),
    )


@dataclass(frozen=True)
class LossConfig:
    contrastive_margin: float = 0.5
    triplet_margin: float = 0.2
    mining: str = "semihard"
    class_weights: str = "none"  # "none" or "balanced" (the sampler already balances)
    teacher: str | None = None  # a medret checkpoint to distil from
    temperature: float = 4.0
    distill_targets: str = "soft"  # "soft" (Hinton) or "hard" (DeiT: the teacher's decision)
    geometry_temperature: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    phases: tuple[PhaseConfig, ...] = field(default_factory=default_phases)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # checks its own values
    lr: float = 4e-4
    batch_size: int = 32
    sampler: str = "balanced"  # "balanced" (P classes × K samples) or "shuffle"
    samples_per_class: int = 4
    batches_per_epoch: int | None = None  # None: one pass over the training split's size
    eval_batch_size: int = 128
    select_metric: str = "auto"  # "macro_f1", "macro_map", or auto: F1 one-label, mAP multi-label
    # what validation queries are searched against each epoch: the training split (the
    # service's situation) or the validation split itself (leave-one-out; 5x fewer images
    # to embed on HAM10000, for recipes that select on macro F1)
    val_gallery: str = "train"
    out_dir: str = "runs/train"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1"
    bf16: bool = True  # autocast to bfloat16 on CUDA (ignored on the CPU)
    tensorboard: bool = True
    threads: int | None = None  # torch CPU threads; None leaves torch's default

    def __post_init__(self) -> None:
        checks = [
            (bool(self.phases), "at least one phase is needed"),
            (all(p.epochs >= 1 for p in self.phases), "every phase needs at least one epoch"),
            (self.batch_size >= 2, "batch_size must be at least 2 (metric losses need pairs)"),
            (self.lr > 0, "lr must be positive"),
            (self.sampler in ("balanced", "shuffle"), "sampler is 'balanced' or 'shuffle'"),
            (self.val_gallery in ("train", "val"), "val_gallery is 'train' or 'val'"),
            (self.model.stem_lr_scale > 0, "model.stem_lr_scale must be positive"),
            (
                self.select_metric in ("auto", "macro_f1", "macro_map"),
                "select_metric is 'auto', 'macro_f1' or 'macro_map'",
            ),
            (
                self.model.architecture in ("vit", "efficientnet_lite0", "cnn"),
                "model.architecture is 'vit', 'efficientnet_lite0' or 'cnn'",
            ),
            (
                self.model.stem in ("patch", "efficientnet_lite0"),
                f"unknown stem {self.model.stem!r}: model.stem is 'patch' or 'efficientnet_lite0'",
            ),
            (
                self.model.stem == "patch" or self.model.architecture == "vit",
                f"model.stem {self.model.stem} is for the ViT (model.architecture vit)",
            ),
            (
                self.model.pretrained != "efficientnet_lite0_imagenet"
                or self.model.architecture == "efficientnet_lite0"
                or self.model.stem == "efficientnet_lite0",
                "model.pretrained efficientnet_lite0_imagenet needs "
                "model.architecture efficientnet_lite0 or model.stem efficientnet_lite0",
            ),
            (self.loss.mining in ("semihard", "hard"), "loss.mining is 'semihard' or 'hard'"),
            (
                self.loss.class_weights in ("none", "balanced"),
                "loss.class_weights is 'none' or 'balanced'",
            ),
        ]
        checks += [
            (
                self.sampler != "balanced" or self.batch_size % self.samples_per_class == 0,
                f"batch_size {self.batch_size} must be a multiple of samples_per_class "
                f"{self.samples_per_class} for the balanced sampler",
            ),
            (self.samples_per_class >= 2, "samples_per_class must be at least 2"),
            (
                self.loss.distill_targets in ("soft", "hard"),
                "loss.distill_targets is 'soft' or 'hard'",
            ),
            (self.loss.geometry_temperature > 0, "loss.geometry_temperature must be positive"),
            (0.0 <= self.data.val_fraction < 1.0, "data.val_fraction must lie in [0, 1)"),
            (self.data.workers >= 0, "data.workers cannot be negative"),
            (self.eval_batch_size >= 1, "eval_batch_size must be at least 1"),
            (
                self.batches_per_epoch is None or self.batches_per_epoch >= 1,
                "batches_per_epoch must be at least 1",
            ),
            (self.threads is None or self.threads >= 1, "threads must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainConfigError(message)
        self._check_model_and_phases()

    def _check_model_and_phases(self) -> None:
        """Build what the run will build, so that a bad value fails now, not after decoding."""
        try:
            self.model.model_config(num_classes=2)
        except ConfigError as exc:
            raise TrainConfigError(f"model: {exc}") from exc
        for i, phase in enumerate(self.phases, 1):
            try:
                phase.to_phase()
            except ValueError as exc:
                raise TrainConfigError(f"phase {i}: {exc}") from exc

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def with_epochs_per_phase(self, epochs: int) -> TrainConfig:
        if epochs < 1:
            raise TrainConfigError(f"epochs per phase must be at least 1, got {epochs}")
        return dataclasses.replace(
            self, phases=tuple(dataclasses.replace(p, epochs=epochs) for p in self.phases)
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: Any, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from plain data, recursively, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise TrainConfigError(f"{where or 'the config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise TrainConfigError(
            f"unknown key(s) {unknown} in {where or 'the config'}; known: {sorted(names)}"
        )
    values = {
        key: _coerce(hints[key], value, f"{where}.{key}".lstrip(".")) for key, value in data.items()
    }
    try:
        return cls(**values)
    except TrainConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise TrainConfigError(f"{where or 'config'}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TrainConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise TrainConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint in (int, float, str):
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise TrainConfigError(f"{where} must be a {hint.__name__}, got {value!r}") from None
    return value


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    built: TrainConfig = _build(TrainConfig, data, "")
    return built


def load_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    *,
    strings: dict[str, str] | None = None,
) -> TrainConfig:
    """A YAML file (or the defaults), then ``section.key=value`` overrides (values parsed as
    YAML), then ``strings`` (values taken literally: paths, device names), validated."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise TrainConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        data = loaded or {}
        if not isinstance(data, dict):
            raise TrainConfigError(f"config file {path} must hold a mapping")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TrainConfigError(f"override {item!r} is not key=value")
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise TrainConfigError(f"override {item!r}: {part} is not a section")
        try:
            target[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise TrainConfigError(f"override {item!r}: the value is not valid YAML") from exc
    for key, value in (strings or {}).items():
        target = data
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return config_from_dict(data)
