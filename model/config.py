"""Typed configuration of the network: size variants, task type, ablation switches.

A :class:`ModelConfig` is frozen and JSON-serialisable; it is saved inside every
checkpoint and rebuilt from there, so a checkpoint always describes its own network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from imaging.preprocessing import as_size
from labels import Task


@dataclass(frozen=True)
class Variant:
    """Width and head count of a named model size (depth 12 for every variant)."""

    width: int
    heads: int
    depth: int = 12


VARIANTS: dict[str, Variant] = {
    "tiny": Variant(width=192, heads=3),
    "small": Variant(width=384, heads=6),
    "base": Variant(width=768, heads=12),
}


ARCHITECTURES = ("vit", "efficientnet_lite0")
"""Networks a checkpoint can describe (:func:`model.architectures.build_model` builds them)."""

STEMS = ("patch", "efficientnet_lite0")
"""How a ViT turns an image into patch tokens: one linear projection per 16-px patch
(``patch``), or EfficientNet-Lite0's first 11 blocks (stride 16) and a 1×1 projection of
their feature map, the hybrid ViT of Dosovitskiy et al. (2021, §3.1)."""
STEM_STRIDE = 16  # the feature map of the EfficientNet-Lite0 stem is 1/16 of the image


class ConfigError(ValueError):
    """A configuration that cannot describe a valid network."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build the network: :class:`model.vit.MultiScaleViT` by default,
    :class:`model.efficientnet.EfficientNetLite0` when ``architecture`` says so (which then
    reads only ``num_classes``, ``task``, ``image_size``, ``in_channels``, ``embed_dim`` and
    ``dropout``). Checkpoints written before the field existed describe a ViT.

    ``image_size`` is the (height, width) the preprocessing produces; the positional
    table is laid out for it (``image_size // patch_size`` cells per side) and other
    sizes are interpolated. ``multiscale=False`` is the plain single-scale ViT/16 of
    the paper's ablation. ``stem`` (:data:`STEMS`) says how patches become tokens.
    """

    num_classes: int
    task: Task = Task.SINGLE_LABEL
    variant: str = "small"
    width: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: tuple[int, int] = (224, 224)
    in_channels: int = 3
    multiscale: bool = True
    min_side: int = 16  # the pyramid halves while the smallest side stays greater than this
    max_scales: int = 8  # size of the learned scale-level table
    embed_dim: int = 256
    dropout: float = 0.1
    attn_dropout: float = 0.0
    architecture: str = "vit"
    stem: str = "patch"

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"unknown architecture {self.architecture!r}; choose one of {list(ARCHITECTURES)}"
            )
        if self.stem not in STEMS:
            raise ConfigError(f"unknown stem {self.stem!r}; choose one of {list(STEMS)}")
        if self.stem != "patch" and self.architecture != "vit":
            raise ConfigError(f"a {self.stem} stem is for the ViT, not {self.architecture}")
        if self.stem != "patch" and self.patch_size % STEM_STRIDE:
            raise ConfigError(
                f"patch_size {self.patch_size} is not a multiple of the {self.stem} stem's "
                f"stride {STEM_STRIDE}"
            )
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {self.num_classes}")
        if self.width % self.heads:
            raise ConfigError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.depth < 1:
            raise ConfigError(f"depth must be at least 1, got {self.depth}")
        h, w = self.image_size
        if min(h, w) < self.patch_size:
            raise ConfigError(f"image_size {h}x{w} is smaller than one {self.patch_size}px patch")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.attn_dropout < 1.0:
            raise ConfigError("dropout rates must lie in [0, 1)")
        if self.embed_dim < 1:
            raise ConfigError(f"embed_dim must be at least 1, got {self.embed_dim}")

    @classmethod
    def from_variant(cls, variant: str, *, num_classes: int, **overrides: Any) -> ModelConfig:
        """A config for a named size (``tiny``, ``small``, ``base``); ``depth=`` etc. override."""
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
        v = VARIANTS[variant]
        fields: dict[str, Any] = {"width": v.width, "heads": v.heads, "depth": v.depth}
        fields.update(overrides)
        if "image_size" in fields:
            fields["image_size"] = _image_size(fields["image_size"])
        if "task" in fields:
            fields["task"] = Task(fields["task"])
        return cls(variant=variant, num_classes=num_classes, **fields)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid of the full-resolution scale, which is also the positional table's."""
        return self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["task"] = self.task.value
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        fields = dict(data)
        if "image_size" in fields:
            fields["image_size"] = _image_size(fields["image_size"])
        if "task" in fields:
            fields["task"] = Task(fields["task"])
        try:
            return cls(**fields)
        except TypeError as exc:  # a required key is missing
            raise ConfigError(f"incomplete model config: {exc}") from exc


def _image_size(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """:func:`imaging.preprocessing.as_size`, a wrong size reported as a :class:`ConfigError`."""
    try:
        return as_size(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
