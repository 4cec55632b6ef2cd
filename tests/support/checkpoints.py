"""Tiny checkpoints for tests: a freshly initialised network saved as the service loads it.

The service, the indexer and the CLI do not depend on the weights being trained, so one
transformer block and a 32-d embedding are enough; ``seed`` gives a different checkpoint
(another SHA-256) with the same label space.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from imaging.preprocessing import PreprocessConfig
from labels import LabelSpace
from model.architectures import build_model
from model.checkpoint import CheckpointMeta, save_checkpoint
from model.config import ModelConfig


def make_checkpoint(
    path: Path,
    codes: tuple[str, ...],
    *,
    size: int = 32,
    seed: int = 0,
    task: str = "single_label",
    names: Mapping[str, str] | None = None,
) -> Path:
    """A freshly initialised small checkpoint (1 block, 32-d embedding, ``size``² input)."""
    torch.manual_seed(seed)
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=len(codes), depth=1, image_size=size, embed_dim=32, task=task
    )
    meta = CheckpointMeta(
        model=cfg,
        labels=LabelSpace.from_codes(codes, names),
        preprocessing=PreprocessConfig(image_size=(size, size)),
    )
    save_checkpoint(path, build_model(cfg), meta)
    return path
