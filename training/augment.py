"""Batched training augmentation on the device (docs/training.md): random flips and rotation.

It runs between :func:`imaging.preprocessing.fit_to_canvas` (uint8 letterboxed canvases,
what the training cache stores) and :func:`imaging.preprocessing.normalise`: uint8
(B, 3, H, W) in, float32 (B, 3, H, W) still on the 0..255 scale out, on the input's device,
so ``normalise`` applies unchanged afterwards.

Per sample, independently: horizontal flip (p = 0.5), vertical flip (p = 0.5) and a rotation
by an angle uniform in ±``max_rotation_deg`` about the image centre.

* **Flips** are exact index operations (``torch.flip`` selected per sample with
  ``torch.where``): no interpolation, so a flip-only configuration is bit-exact.
* **Rotation** is one batched ``affine_grid`` + ``grid_sample`` (bilinear,
  ``align_corners=False``, zeros padding — the corners that rotate in are black like the
  letterbox borders). The rotation is done in pixel units, so a non-square image is rotated
  rigidly, not sheared. A positive angle turns the content counter-clockwise on screen.
  When rotation is disabled no resampling happens at all.
* Random numbers come from ``generator`` on the generator's own device (default: the global
  RNG of the images' device) and are then moved to the images' device, so a seeded CPU
  generator makes the same draws for CPU and CUDA batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812


@dataclass(frozen=True)
class AugmentConfig:
    """The ``augment`` section of the training config (:class:`training.config.TrainConfig`)."""

    hflip: bool = True
    vflip: bool = True
    max_rotation_deg: float = 15.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_rotation_deg <= 180.0:
            raise ValueError(f"max_rotation_deg must lie in [0, 180], got {self.max_rotation_deg}")


@dataclass(frozen=True)
class AugmentParams:
    """The random draws for one batch."""

    hflip: torch.Tensor  # (B,) bool
    vflip: torch.Tensor  # (B,) bool
    angle_deg: torch.Tensor | None  # (B,) float32, counter-clockwise; None: no rotation


def sample_params(
    batch: int,
    cfg: AugmentConfig,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> AugmentParams:
    """Draw flips and angles for ``batch`` images; always three draws of ``batch`` numbers, so
    the stream of random numbers does not depend on which options are enabled. The angle is
    ``None`` when rotation is disabled (then nothing is resampled)."""
    source = generator.device if generator is not None else device
    u = torch.rand(3, batch, generator=generator, device=source).to(device)  # (3, B)
    hflip = (u[0] < 0.5) & cfg.hflip  # (B,)
    vflip = (u[1] < 0.5) & cfg.vflip  # (B,)
    angle = (u[2] * 2.0 - 1.0) * cfg.max_rotation_deg if cfg.max_rotation_deg > 0 else None  # (B,)
    return AugmentParams(hflip=hflip, vflip=vflip, angle_deg=angle)


def apply_params(images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Flip then rotate ``images`` (B, C, H, W) → float32 (B, C, H, W) in 0..255."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    x = images.float()  # (B, C, H, W)
    x = torch.where(params.hflip[:, None, None, None], x.flip(-1), x)  # (B, C, H, W)
    x = torch.where(params.vflip[:, None, None, None], x.flip(-2), x)  # (B, C, H, W)
    if params.angle_deg is not None:
        x = rotate(x, params.angle_deg)  # (B, C, H, W)
    return x


def rotate(images: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Rotate float ``images`` (B, C, H, W) counter-clockwise by ``angle_deg`` (B,) about the
    centre: one ``affine_grid`` + bilinear ``grid_sample``, black outside, clamped to 0..255."""
    b, _, h, w = images.shape
    theta = rotation_theta(angle_deg.to(images.device, torch.float32), h, w)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, images.shape[1], h, w], align_corners=False)  # (B, H, W, 2)
    out = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )  # (B, C, H, W)
    return out.clamp_(0.0, 255.0)


def rotation_theta(angle_deg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B,) angles → (B, 2, 3) ``affine_grid`` matrices mapping output to input coordinates.

    In centred pixel coordinates (x right, y down) the content turns counter-clockwise on
    screen when the output pixel ``p`` samples the input at ``[[c, −s], [s, c]] · p``.
    ``affine_grid`` works in coordinates normalised by the half-width and half-height, so the
    off-diagonal terms carry the aspect ratio.
    """
    rad = angle_deg * (math.pi / 180.0)  # (B,)
    c, s = torch.cos(rad), torch.sin(rad)  # (B,), (B,)
    zero = torch.zeros_like(rad)  # (B,)
    row_x = torch.stack([c, -s * (height / width), zero], dim=1)  # (B, 3)
    row_y = torch.stack([s * (width / height), c, zero], dim=1)  # (B, 3)
    return torch.stack([row_x, row_y], dim=1)  # (B, 2, 3)


def augment_batch(
    images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 (B, 3, H, W) → augmented float32 (B, 3, H, W) in 0..255 on the same device."""
    params = sample_params(images.shape[0], cfg, images.device, generator)
    return apply_params(images, params)
