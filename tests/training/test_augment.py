from __future__ import annotations

import math

import pytest
import torch

from imaging.preprocessing import PreprocessConfig, normalise
from training.augment import (
    AugmentConfig,
    AugmentParams,
    apply_params,
    augment_batch,
    sample_params,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_images(b: int = 6, h: int = 20, w: int = 28, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=gen, dtype=torch.uint8)


def marker_image(h: int, w: int, row: int, col: int) -> torch.Tensor:
    """Black (1, 3, H, W) uint8 with a 3×3 white square centred at (row, col)."""
    image = torch.zeros(1, 3, h, w, dtype=torch.uint8)
    image[:, :, row - 1 : row + 2, col - 1 : col + 2] = 255
    return image


def centre_of_mass(image: torch.Tensor) -> tuple[float, float]:
    """(row, col) of the brightness of a (1, 3, H, W) image."""
    mass = image[0].float().sum(0)  # (H, W)
    rows = torch.arange(mass.shape[0], dtype=torch.float32)[:, None]
    cols = torch.arange(mass.shape[1], dtype=torch.float32)[None, :]
    total = mass.sum()
    return float((mass * rows).sum() / total), float((mass * cols).sum() / total)


def rotate_by(images: torch.Tensor, degrees: float) -> torch.Tensor:
    b = images.shape[0]
    no = torch.zeros(b, dtype=torch.bool)
    return apply_params(images, AugmentParams(no, no, torch.full((b,), degrees)))


@pytest.mark.parametrize("device", DEVICES)
def test_everything_disabled_is_the_exact_identity(device: str) -> None:
    images = random_images().to(device)
    cfg = AugmentConfig(hflip=False, vflip=False, max_rotation_deg=0.0)
    out = augment_batch(images, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(out, images.float())


def test_flip_only_config_gives_exactly_flipped_images() -> None:
    images = random_images(b=32)
    cfg = AugmentConfig(hflip=True, vflip=False, max_rotation_deg=0.0)
    out = augment_batch(images, cfg, torch.Generator().manual_seed(1))
    flipped = [torch.equal(o, i.float().flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i.float()) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 4 < sum(flipped) < 28  # p = 0.5 per sample
    vcfg = AugmentConfig(hflip=False, vflip=True, max_rotation_deg=0.0)
    vout = augment_batch(images, vcfg, torch.Generator().manual_seed(1))
    for o, i in zip(vout, images, strict=True):
        assert torch.equal(o, i.float().flip(-2)) or torch.equal(o, i.float())


def test_both_flips_on_a_known_image() -> None:
    image = torch.arange(12, dtype=torch.uint8).view(1, 1, 3, 4).expand(1, 3, 3, 4)
    yes = torch.ones(1, dtype=torch.bool)
    out = apply_params(image, AugmentParams(yes, yes, None))
    assert out[0, 0].tolist() == [[11, 10, 9, 8], [7, 6, 5, 4], [3, 2, 1, 0]]


@pytest.mark.parametrize(("h", "w"), [(33, 33), (41, 65)])
def test_rotation_by_the_max_angle_moves_a_marker_counter_clockwise(h: int, w: int) -> None:
    cy, cx = (h - 1) / 2, (w - 1) / 2  # the rotation centre in pixel indices
    r = 12
    image = marker_image(h, w, row=int(cy) - r, col=int(cx))  # straight above the centre
    angle = AugmentConfig().max_rotation_deg
    out = rotate_by(image, angle)
    row, col = centre_of_mass(out)
    a = math.radians(angle)
    # counter-clockwise on screen: the marker swings to the left, keeping its distance
    assert col == pytest.approx(cx - r * math.sin(a), abs=0.3)
    assert row == pytest.approx(cy - r * math.cos(a), abs=0.3)
    back = rotate_by(image, -angle)
    assert centre_of_mass(back)[1] == pytest.approx(cx + r * math.sin(a), abs=0.3)


def test_rotation_fills_the_corners_with_black() -> None:
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    out = rotate_by(white, 15.0)
    assert out[0, :, 0, 0].eq(0).all()  # a corner rotated in from outside
    assert out[0, :, 16, 16].eq(255).all()  # the centre stays


@pytest.mark.parametrize("device", DEVICES)
def test_output_dtype_range_shape_and_device(device: str) -> None:
    images = random_images(b=8, h=24, w=24).to(device)
    out = augment_batch(images, AugmentConfig(), torch.Generator().manual_seed(2))
    assert out.dtype == torch.float32
    assert out.shape == images.shape
    assert out.device == images.device
    assert out.min() >= 0
    assert out.max() <= 255
    assert out.max() > 1  # still on the 0..255 scale, not 0..1
    normalised = normalise(out, PreprocessConfig(image_size=(24, 24)))  # applies unchanged
    assert normalised.shape == images.shape


def test_seeded_generator_makes_augmentation_deterministic() -> None:
    images = random_images(b=8)
    cfg = AugmentConfig()
    a = augment_batch(images, cfg, torch.Generator().manual_seed(7))
    b = augment_batch(images, cfg, torch.Generator().manual_seed(7))
    c = augment_batch(images, cfg, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampled_parameters_respect_the_config() -> None:
    gen = torch.Generator().manual_seed(0)
    cfg = AugmentConfig(hflip=True, vflip=False, max_rotation_deg=10.0)
    params = sample_params(1000, cfg, torch.device("cpu"), gen)
    assert not params.vflip.any()
    assert 400 < int(params.hflip.sum()) < 600
    assert params.angle_deg is not None
    assert params.angle_deg.abs().max() <= 10.0
    assert params.angle_deg.min() < -9.0
    assert params.angle_deg.max() > 9.0
    off = sample_params(4, AugmentConfig(max_rotation_deg=0.0), torch.device("cpu"), gen)
    assert off.angle_deg is None


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="max_rotation_deg"):
        AugmentConfig(max_rotation_deg=-1.0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        augment_batch(torch.zeros(3, 8, 8, dtype=torch.uint8), AugmentConfig())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cpu_generator_makes_the_same_draws_for_cuda_images() -> None:
    images = random_images(b=8)
    cfg = AugmentConfig()
    on_cpu = augment_batch(images, cfg, torch.Generator().manual_seed(4))
    on_gpu = augment_batch(images.cuda(), cfg, torch.Generator().manual_seed(4))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=0.5, rtol=0)
