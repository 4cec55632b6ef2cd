"""The multi-scale Vision Transformer (docs/model.md, docs/architecture.md §6).

Forward pass, stage by stage::

    image (B, 3, H, W)
      → pyramid: the image and its 2× average-pooled copies while the smallest side > 16 px
      → every scale cut into 16×16 patches by ONE shared linear patch embedding
        (hybrid stem, ``cfg.stem="efficientnet_lite0"``: the image → EfficientNet-Lite0's
        first 11 blocks → a stride-16 feature map; the pyramid is that map and its 2×
        average-pooled copies, each cell projected by one shared 1×1 convolution)
      → + 3-D positional encoding of (scale level, x, y)
      → [CLS] prepended → pre-norm encoder blocks → final LayerNorm
      → [CLS] → feed-forward → L2-normalised embedding (retrieval, metric losses)
      → embedding → feed-forward → class logits (softmax or per-class sigmoid)

The positional encoding is the sum of a *spatial* term and a *scale* term. The spatial
term is a learned table laid out like a plain ViT's (one cell per full-resolution patch)
and sampled bilinearly at each patch's centre expressed as a fraction of its own scale's
image. The same physical location therefore gets the same spatial code at every scale,
and a pretrained ViT/16 table maps onto it without change. The scale term is one learned
vector per pyramid level, so levels are distinguishable.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from labels import Task
from model.config import STEM_STRIDE, ModelConfig


def pyramid_sizes(
    height: int, width: int, *, patch_size: int = 16, min_side: int = 16, multiscale: bool = True
) -> list[tuple[int, int]]:
    """Image sizes of the pyramid: halve (flooring) while the smallest side stays > ``min_side``.

    224×224 → [(224, 224), (112, 112), (56, 56), (28, 28)]. A scale too small to hold one
    patch contributes no tokens and ends the pyramid.
    """
    sizes = [(height, width)]
    if not multiscale:
        return sizes
    h, w = height // 2, width // 2
    while min(h, w) > min_side and min(h, w) >= patch_size:
        sizes.append((h, w))
        h, w = h // 2, w // 2
    return sizes


def token_counts(
    height: int, width: int, *, patch_size: int = 16, min_side: int = 16, multiscale: bool = True
) -> list[int]:
    """Patches per scale: a 3.5-patch-wide scale floors to 3 (224² → [196, 49, 9, 1])."""
    return [
        (h // patch_size) * (w // patch_size)
        for h, w in pyramid_sizes(
            height, width, patch_size=patch_size, min_side=min_side, multiscale=multiscale
        )
    ]


class ModelOutput(NamedTuple):
    embedding: torch.Tensor  # (B, E), unit L2 norm
    logits: torch.Tensor  # (B, num_classes)


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping patches and project each linearly (a strided conv)."""

    def __init__(self, patch_size: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, h, w); pixels past the last whole patch are dropped
        return x.flatten(2).transpose(1, 2)  # (B, h*w, D), row-major


class ScalePositionEncoding(nn.Module):
    """3-D positional encoding: spatial(x, y) sampled from a learned grid + scale(level)."""

    def __init__(self, width: int, grid_size: tuple[int, int], max_scales: int) -> None:
        super().__init__()
        self.grid = nn.Parameter(torch.zeros(1, width, *grid_size))  # (1, D, Gh, Gw)
        self.scale = nn.Parameter(torch.zeros(max_scales, width))  # (L, D)

    def spatial(self, centres_y: torch.Tensor, centres_x: torch.Tensor) -> torch.Tensor:
        """Spatial codes at patch centres given as fractions in [0, 1] → (h*w, D)."""
        gy, gx = torch.meshgrid(centres_y * 2 - 1, centres_x * 2 - 1, indexing="ij")
        points = torch.stack((gx, gy), dim=-1).unsqueeze(0)  # (1, h, w, 2) as grid_sample wants
        codes = F.grid_sample(
            self.grid,
            points.to(self.grid.dtype),
            mode="bilinear",
            align_corners=False,
            padding_mode="border",
        )  # (1, D, h, w)
        return codes.flatten(2).squeeze(0).transpose(0, 1)  # (h*w, D)

    def forward(
        self, level: int, patches: tuple[int, int], image: tuple[int, int], patch_size: int
    ) -> torch.Tensor:
        """Encodings for the ``patches`` grid cut from an ``image``-sized pyramid ``level``."""
        device = self.grid.device
        rows = (torch.arange(patches[0], device=device) + 0.5) * patch_size / image[0]
        cols = (torch.arange(patches[1], device=device) + 0.5) * patch_size / image[1]
        return self.spatial(rows, cols) + self.scale[level]  # (h*w, D)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (fused on GPU)."""

    def __init__(self, width: int, heads: int, attn_dropout: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.attn_dropout = attn_dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, d_head)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = x.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn = Attention(cfg.width, cfg.heads, cfg.attn_dropout, cfg.dropout)
        self.norm2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = Mlp(cfg.width, int(cfg.width * cfg.mlp_ratio), cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EmbeddingHead(nn.Module):
    """[CLS] features → feed-forward → L2-normalised retrieval embedding."""

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc2(self.act(self.fc1(x))), dim=-1)


class ClassifierHead(nn.Module):
    """Embedding → feed-forward → class logits. LayerNorm first: the input has unit norm."""

    def __init__(self, embed_dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, embed_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(self.norm(x)))))


class MultiScaleViT(nn.Module):
    """The paper's network; ``cfg.multiscale=False`` is the plain ViT/16 of the ablation.

    Module names follow the common ``vit_*_patch16_224`` state-dict layout
    (``patch_embed.proj``, ``blocks.N.attn.qkv`` …) so that pretrained weights load
    directly (see :mod:`model.pretrained`).
    """

    def __init__(
        self, cfg: ModelConfig, stem: nn.Module | None = None, stem_channels: int = 0
    ) -> None:
        super().__init__()
        self.cfg = cfg
        if (stem is None) != (cfg.stem == "patch"):
            raise ValueError(
                f"a {cfg.stem!r} stem needs its module (model.architectures.build_model)"
            )
        self.stem = stem
        self.stem_stride = 1 if stem is None else STEM_STRIDE
        self.patch_embed = PatchEmbed(  # a stem's map: (patch_size / stride)-cell patches
            cfg.patch_size // self.stem_stride,
            cfg.in_channels if stem is None else stem_channels,
            cfg.width,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos = ScalePositionEncoding(cfg.width, cfg.grid_size, cfg.max_scales)
        self.pos_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.embed_head = EmbeddingHead(cfg.width, cfg.embed_dim)
        self.classifier = ClassifierHead(cfg.embed_dim, cfg.num_classes, cfg.dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated-normal(0.02) for linear layers and tables, zero biases, unit LayerNorms."""
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos.grid, std=0.02)
        nn.init.trunc_normal_(self.pos.scale, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        proj = self.patch_embed.proj  # like a linear layer on flattened patches
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        nn.init.trunc_normal_(proj.weight, std=1 / math.sqrt(fan_in))
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)

    def scale_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patch tokens with positional encodings, one (B, n_l, D) tensor per pyramid level."""
        cfg = self.cfg
        sizes = pyramid_sizes(
            x.shape[-2],
            x.shape[-1],
            patch_size=cfg.patch_size,
            min_side=cfg.min_side,
            multiscale=cfg.multiscale,
        )
        if len(sizes) > cfg.max_scales:
            raise ValueError(
                f"a {x.shape[-2]}x{x.shape[-1]} input makes {len(sizes)} scales, "
                f"more than max_scales={cfg.max_scales}"
            )
        if self.stem is not None:  # the pyramid is built on the stem's feature map
            x = self.stem(x)  # (B, C', ⌈H/s⌉, ⌈W/s⌉)
        cells = cfg.patch_size // self.stem_stride
        tokens = []
        for level, size in enumerate(sizes):
            if level:
                x = F.avg_pool2d(x, kernel_size=2)  # (B, C, H/2^l, W/2^l), floored
            patches = (size[0] // cfg.patch_size, size[1] // cfg.patch_size)
            pos = self.pos(level, patches, size, cfg.patch_size)  # (n_l, D)
            x_l = x[..., : patches[0] * cells, : patches[1] * cells]  # whole patches only
            tokens.append(self.patch_embed(x_l) + pos.to(x.dtype))
        return tokens

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) → normalised [CLS] features (B, D)."""
        return self.features_from_tokens(self.scale_tokens(x))

    def features_from_tokens(self, scale_tokens: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`scale_tokens`' output → normalised [CLS] features (B, D): the encoder.

        Split from :meth:`forward_features` so that explanations (:mod:`model.explain`)
        can take gradients with respect to the patch tokens of every scale.
        """
        tokens = torch.cat(scale_tokens, dim=1)  # (B, N, D)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        h = self.pos_drop(torch.cat((cls, tokens), dim=1))  # (B, 1+N, D)
        for block in self.blocks:
            h = block(h)
        return self.norm(h[:, 0])  # (B, D)

    def forward_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Images → unit-norm retrieval embeddings (B, E)."""
        return self.embed_head(self.forward_features(x))

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ModelOutput]:
        """The [CLS] features (B, D) the heads read, and what :meth:`forward` returns
        (the service scores out-of-distribution images on the features)."""
        features = self.forward_features(x)
        embedding = self.embed_head(features)
        return features, ModelOutput(embedding=embedding, logits=self.classifier(embedding))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.forward_with_features(x)[1]


def probabilities(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Softmax over classes for one-label data, independent sigmoids for multi-label data."""
    if task is Task.MULTI_LABEL:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=-1)
