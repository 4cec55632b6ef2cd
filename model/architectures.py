"""The networks a checkpoint can hold, chosen by :attr:`model.config.ModelConfig.architecture`.

Both answer the same calls: ``forward`` → :class:`~model.vit.ModelOutput` (unit embedding,
logits) and ``forward_with_features`` → (the features the heads read, that output), so
training, the indexer and the service treat them alike; only explanations need the ViT's
patch tokens.
"""

from __future__ import annotations

from typing import TypeAlias

from model.config import ModelConfig
from model.efficientnet import STEM_OUT_CHANNELS, EfficientNetLite0, LiteStem
from model.vit import MultiScaleViT

Network: TypeAlias = MultiScaleViT | EfficientNetLite0
NETWORK_TYPES = (MultiScaleViT, EfficientNetLite0)
"""For ``isinstance``: a network that can be saved as a checkpoint."""


def build_model(cfg: ModelConfig) -> Network:
    """A freshly initialised network for ``cfg``."""
    if cfg.architecture == "efficientnet_lite0":
        return EfficientNetLite0(cfg)
    if cfg.stem == "efficientnet_lite0":
        return MultiScaleViT(cfg, stem=LiteStem(cfg.in_channels), stem_channels=STEM_OUT_CHANNELS)
    return MultiScaleViT(cfg)
