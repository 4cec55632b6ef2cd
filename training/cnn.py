"""A small ResNet-18-style CNN: the convolutional baseline of the ablation.

Four stages of two basic residual blocks (3×3 convolutions, batch norm, ReLU) after a
stem, global average pooling, then the same embedding and classifier heads as the ViT
(:class:`model.vit.EmbeddingHead`, :class:`model.vit.ClassifierHead`), so it trains
with the same losses and is evaluated the same way. ``base_width`` 64 gives the
original ResNet-18 widths (64-128-256-512); the CPU recipe uses a narrower one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from model.vit import ClassifierHead, EmbeddingHead, ModelOutput


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNet18Like(nn.Module):
    def __init__(
        self, num_classes: int, *, embed_dim: int = 256, base_width: int = 64, dropout: float = 0.1
    ) -> None:
        super().__init__()
        w = base_width
        self.stem = nn.Sequential(
            nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        widths = [w, 2 * w, 4 * w, 8 * w]
        layers: list[nn.Module] = []
        c_in = w
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.embed_head = EmbeddingHead(c_in, embed_dim)
        self.classifier = ClassifierHead(embed_dim, num_classes, dropout)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(x)).mean(dim=(2, 3))  # (B, 8w)
        return self.embed_head(features)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        embedding = self.forward_embedding(x)
        return ModelOutput(embedding=embedding, logits=self.classifier(embedding))
