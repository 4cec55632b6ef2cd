"""The one preprocessing path: decoded pixels → the tensor the network sees.

Training, indexing and serving all call these functions, so one file always becomes
exactly the same tensor:

1. :func:`to_rgb` — grey (H, W, 1) is repeated to three channels; RGB stays as is.
2. :func:`fit_to_canvas` — *letterbox*: resize (bilinear, antialiased, on the CPU) so that
   the whole image fits the configured (height, width) keeping its aspect ratio, round to
   uint8, and centre it on a black canvas. Nothing is cropped away, every image in a
   batch has the same shape, and black is what the borders of dermoscopy photographs and
   radiographs already look like. An image that already has the configured size is not
   resampled at all. The uint8 result is what the training cache stores.
3. :func:`normalise` — uint8 → float32 in [0, 1] → ImageNet mean/std. Training applies
   its augmentation between steps 2 and 3 (on the GPU when there is one).

:func:`preprocess` chains the three steps for one image.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """How pixels become the model's input; saved in every checkpoint."""

    image_size: tuple[int, int] = (224, 224)  # (height, width)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    fit: str = "letterbox"

    def __post_init__(self) -> None:
        if self.fit != "letterbox":
            raise ValueError(f"unknown fit {self.fit!r}; only 'letterbox' is implemented")
        if min(self.image_size) < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {sorted(unknown)}")
        fields = dict(data)
        if "image_size" in fields:
            fields["image_size"] = as_size(fields["image_size"])
        for key in ("mean", "std"):
            if key in fields:
                values = tuple(float(v) for v in fields[key])
                if len(values) != 3:
                    raise ValueError(f"{key} needs 3 values, got {len(values)}")
                fields[key] = values
        return cls(**fields)


def as_size(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``224`` → ``(224, 224)``; ``[256, 192]`` → ``(256, 192)`` (height, width)."""
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"a size is one int or (height, width), got {value!r}")
    return (int(value[0]), int(value[1]))


def checked_pixels(pixels: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 → (H, W, 1|3) uint8; ValueError otherwise."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"expected (H, W, 1|3) pixels, got shape {pixels.shape}")
    return pixels


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 → (H, W, 3) uint8."""
    pixels = checked_pixels(pixels)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels


def letterbox_geometry(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(new_h, new_w, top, left): the resized image's size and its offset on the canvas."""
    scale = min(size[0] / height, size[1] / width)
    new_h = min(size[0], max(1, round(height * scale)))
    new_w = min(size[1], max(1, round(width * scale)))
    return new_h, new_w, (size[0] - new_h) // 2, (size[1] - new_w) // 2


def fit_to_canvas(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, C) uint8 → letterboxed (3, size_h, size_w) uint8 tensor (see module doc).

    Each channel is resized on its own (grey once, then repeated), so at most one channel
    of the full-size image is ever float: 4 bytes a pixel, not 12. The interpolation of a
    channel does not depend on the others, so the result is the same as resizing all three
    at once.
    """
    pixels = checked_pixels(pixels)
    height, width = pixels.shape[0], pixels.shape[1]
    new_h, new_w, top, left = letterbox_geometry(height, width, size)
    channels = [_resized_channel(pixels[:, :, c], new_h, new_w) for c in range(pixels.shape[2])]
    canvas = torch.zeros((3, size[0], size[1]), dtype=torch.uint8)
    for c in range(3):
        canvas[c, top : top + new_h, left : left + new_w] = channels[c % len(channels)]
    return canvas


def _resized_channel(channel: np.ndarray, new_h: int, new_w: int) -> torch.Tensor:
    """One (H, W) uint8 channel → (new_h, new_w) uint8, bilinear and antialiased."""
    plane = torch.from_numpy(np.require(channel, requirements=["C", "W"]))
    if tuple(plane.shape) == (new_h, new_w):
        return plane
    resized = F.interpolate(
        plane[None, None].float(),
        size=(new_h, new_w),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0, 0]
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def normalise(images: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """uint8 (…, 3, H, W) → float32 normalised with the config's mean/std, on its device."""
    mean = torch.tensor(cfg.mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def preprocess(pixels: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """Decoded pixels (H, W, 1|3) uint8 → the model input (3, H', W') float32."""
    return normalise(fit_to_canvas(pixels, cfg.image_size), cfg)
