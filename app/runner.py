"""One loaded checkpoint on the device, behind a :class:`~app.batching.MicroBatcher`.

The runner's input is the letterboxed uint8 canvas that
:func:`imaging.preprocessing.fit_to_canvas` makes (exactly as training and the indexer);
its forward is :func:`model.inference.infer`, the one path shared with training's
validation and the indexer: normalisation on the device, bf16 autocast on CUDA when
``MEDRET_BF16`` allows it (full precision on the CPU), the unit embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from app.batching import MicroBatcher
from app.metrics import ServiceMetrics
from app.settings import Settings
from imaging.preprocessing import fit_to_canvas
from model.checkpoint import LoadedCheckpoint
from model.inference import infer
from model.vit import probabilities


@dataclass(frozen=True)
class Prediction:
    embedding: np.ndarray  # (E,) float32, unit norm
    probabilities: np.ndarray  # (C,) float32
    features: np.ndarray  # (D,) float32: the [CLS] features the embedding head reads


class ModelRunner:
    """A loaded checkpoint and the micro-batcher in front of it."""

    def __init__(
        self,
        loaded: LoadedCheckpoint,
        device: torch.device,
        settings: Settings,
        metrics: ServiceMetrics,
    ) -> None:
        self.loaded = loaded
        self.device = device
        self.bf16 = settings.bf16
        self.meta = loaded.meta
        self.sha256 = loaded.sha256
        self.task = loaded.meta.model.task
        self.image_size = loaded.meta.preprocessing.image_size
        self.batcher: MicroBatcher[torch.Tensor, Prediction] = MicroBatcher(
            self.forward,
            max_batch=settings.batch_max,
            max_wait_s=settings.batch_wait_ms / 1000,
            name=loaded.sha256[:8],
            on_batch=metrics.batch_size.observe,
        )

    def canvas(self, pixels: np.ndarray) -> torch.Tensor:
        """Decoded pixels → the letterboxed uint8 (3, H, W) model canvas (CPU)."""
        return fit_to_canvas(pixels, self.image_size)

    @torch.inference_mode()
    def forward(self, canvases: Sequence[torch.Tensor]) -> list[Prediction]:
        """Embeddings and class probabilities of a batch of canvases (blocking)."""
        out = infer(
            self.loaded.model,
            torch.stack(list(canvases)),  # (B, 3, H, W) uint8
            self.meta.preprocessing,
            self.device,
            bf16=self.bf16,
            with_features=True,
        )
        assert out.features is not None
        emb_np = out.embeddings.numpy().astype(np.float32, copy=False)
        prob_np = probabilities(out.logits, self.task).numpy()
        feat_np = out.features.numpy()
        return [Prediction(e, p, f) for e, p, f in zip(emb_np, prob_np, feat_np, strict=True)]

    async def predict(self, canvas: torch.Tensor) -> Prediction:
        return await self.batcher.submit(canvas)

    async def aclose(self) -> None:
        await self.batcher.aclose()
