"""The one preprocessing path: letterbox geometry, normalisation, its config, and one image
in every lossless container giving one tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imaging.decode import decode_image
from imaging.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessConfig,
    as_size,
    fit_to_canvas,
    letterbox_geometry,
    normalise,
    preprocess,
    to_rgb,
)
from support.dicom import make_dataset, to_bytes
from support.images import encode_array

CFG = PreprocessConfig(image_size=(224, 224))


def test_image_of_the_configured_size_is_not_resampled() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out = preprocess(pixels, CFG)
    assert out.shape == (3, 224, 224)
    assert out.dtype == torch.float32
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    expected = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(out, expected)


def test_letterbox_keeps_aspect_ratio_and_pads_black() -> None:
    # a white 100 (high) x 50 (wide) image → 224 x 112 centred, black either side
    canvas = fit_to_canvas(np.full((100, 50, 1), 255, np.uint8), (224, 224))
    assert canvas.shape == (3, 224, 224)
    assert canvas.dtype == torch.uint8
    assert letterbox_geometry(100, 50, (224, 224)) == (224, 112, 0, 56)
    assert (canvas[:, :, :56] == 0).all()
    assert (canvas[:, :, 168:] == 0).all()
    assert (canvas[:, :, 56:168] == 255).all()


def test_wide_image_is_padded_top_and_bottom() -> None:
    assert letterbox_geometry(450, 600, (224, 224)) == (168, 224, 28, 0)
    assert letterbox_geometry(3, 3000, (224, 224)) == (1, 224, 111, 0)


def test_geometry_survives_the_resize() -> None:
    # a bright square in the top-left quarter stays in the top-left quarter
    pixels = np.zeros((400, 400, 3), np.uint8)
    pixels[:200, :200] = 200
    canvas = fit_to_canvas(pixels, (224, 224)).float()
    assert canvas[:, :100, :100].mean() == pytest.approx(200, abs=1)
    assert canvas[:, 124:, 124:].mean() == pytest.approx(0, abs=1)


def test_grey_becomes_three_equal_channels() -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    rgb = to_rgb(grey)
    assert rgb.shape == (8, 8, 3)
    assert (rgb[..., 0] == rgb[..., 2]).all()
    assert to_rgb(grey[..., 0]).shape == (8, 8, 3)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros(4, np.uint8)],
)
def test_unexpected_pixel_arrays_are_refused(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected"):
        to_rgb(pixels)


def test_normalise_works_on_batches() -> None:
    batch = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalise(batch, CFG)
    assert out.shape == (2, 3, 4, 4)
    torch.testing.assert_close(
        out[1, :, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    )


def test_config_round_trip_and_validation() -> None:
    cfg = PreprocessConfig(image_size=(256, 192))
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        PreprocessConfig.from_dict({"crop": True})
    with pytest.raises(ValueError, match="only 'letterbox'"):
        PreprocessConfig(fit="crop")


def test_a_size_is_one_int_or_height_and_width() -> None:
    assert as_size(224) == (224, 224)
    assert as_size([256, 192]) == (256, 192)
    assert as_size((64, 32)) == (64, 32)
    with pytest.raises(ValueError, match="a size is one int or"):
        as_size([1, 2, 3])
    with pytest.raises(ValueError, match="a size is one int or"):
        PreprocessConfig.from_dict({"image_size": [224]})


def test_one_image_in_every_lossless_container_gives_one_tensor() -> None:
    """The same pixels as PNG, TIFF, BMP, WebP-lossless and DICOM → the same model input."""
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (120, 90), dtype=np.uint8)
    reference = preprocess(grey[:, :, None], CFG)
    containers = {fmt: encode_array(grey, fmt) for fmt in ("PNG", "TIFF", "BMP")}
    containers["DICOM"] = to_bytes(make_dataset(grey))  # 8-bit MONOCHROME2, as it is
    for name, data in containers.items():
        decoded = decode_image(data)
        torch.testing.assert_close(preprocess(decoded.pixels, CFG), reference, msg=name)


def test_real_dermoscopy_image(shared_data: Path) -> None:
    path = next((shared_data / "ham10000" / "images").glob("*.jpg"))
    decoded = decode_image(path.read_bytes())
    assert decoded.pixels.shape == (224, 224, 3)
    expected = np.asarray(Image.open(path).convert("RGB"))
    canvas = fit_to_canvas(decoded.pixels, (224, 224))
    assert (canvas.permute(1, 2, 0).numpy() == expected).all()


def test_real_chest_xray_is_resized_to_the_canvas(shared_data: Path) -> None:
    path = next((shared_data / "chestxray14" / "images").glob("*.png"))
    decoded = decode_image(path.read_bytes())
    assert decoded.pixels.shape == (256, 256, 1)
    out = preprocess(decoded.pixels, CFG)
    assert out.shape == (3, 224, 224)
    # grey in, three identical channels out (before normalisation)
    canvas = fit_to_canvas(decoded.pixels, (224, 224))
    assert torch.equal(canvas[0], canvas[1])
    assert canvas.float().std() > 20  # a real radiograph, not a blank
