"""The one inference path: uint8 canvases → normalise → precision → forward → unit embedding.

Training's validation, the indexer and the service all embed through :func:`infer`, so a
file becomes exactly the same embedding wherever it is embedded: the same normalisation
(the checkpoint's :class:`~imaging.preprocessing.PreprocessConfig`), the same precision rule
(:func:`model.device.autocast`: bf16 on CUDA when asked for, full precision on the CPU) and
the same re-normalisation in float32 after a bf16 forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from imaging.preprocessing import PreprocessConfig, normalise
from model.architectures import NETWORK_TYPES
from model.device import autocast
from model.vit import ModelOutput


@dataclass(frozen=True)
class Inference:
    """What one forward pass gives, as float32 tensors on the CPU."""

    embeddings: torch.Tensor  # (B, E), unit L2 norm
    logits: torch.Tensor  # (B, C)
    features: torch.Tensor | None = None  # (B, D) the heads' input, when asked for


@torch.inference_mode()
def infer(
    network: nn.Module,
    canvases: torch.Tensor,
    preprocessing: PreprocessConfig,
    device: torch.device,
    *,
    bf16: bool = True,
    with_features: bool = False,
) -> Inference:
    """Embed a batch of letterboxed uint8 canvases (B, 3, H, W) with ``network`` as it is.

    The caller chooses train/eval mode (validation puts the network in eval mode and back).
    ``with_features`` also returns the features the heads read: the ViT's [CLS] features or
    EfficientNet-Lite0's pooled ones (the training-only CNN baseline has none).
    """
    x = normalise(canvases.to(device, non_blocking=True), preprocessing)
    features: torch.Tensor | None = None
    with autocast(device, bf16):
        if with_features:
            if not isinstance(network, NETWORK_TYPES):
                raise TypeError(f"{type(network).__name__} has no features for the heads")
            features, out = network.forward_with_features(x)  # (B, D), ModelOutput
        else:
            out = network(x)
    assert isinstance(out, ModelOutput)
    embeddings = nn.functional.normalize(out.embedding.float(), dim=-1)  # again after bf16
    return Inference(
        embeddings=embeddings.cpu(),
        logits=out.logits.float().cpu(),
        features=None if features is None else features.float().cpu(),
    )
