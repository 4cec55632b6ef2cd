"""The hybrid multi-scale ViT: EfficientNet-Lite0's first blocks as the patch embedding.

Its tokens lie on the same grid as the plain ViT's at every scale (so the positional
encoding, the pyramid and the explanation maps mean the same), its stem loads strictly
from the ImageNet weights or from a fine-tuned EfficientNet-Lite0 checkpoint, and it is a
checkpoint architecture like the others (save, load, explain).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from imaging.preprocessing import PreprocessConfig, normalise
from labels import LabelSpace, Task
from model.architectures import build_model
from model.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from model.config import ConfigError, ModelConfig
from model.efficientnet import (
    INPUT_MEAN,
    INPUT_STD,
    EfficientNetLite0,
    LiteStem,
    PretrainedWeightsError,
    load_stem_weights,
    read_imagenet_state,
)
from model.explain import explain_similarity
from model.vit import MultiScaleViT

CODES = ("MEL", "NV", "BCC")


def hybrid_config(size: int = 64, **overrides: object) -> ModelConfig:
    fields: dict[str, object] = {"stem": "efficientnet_lite0", **overrides}
    return ModelConfig.from_variant(
        "tiny", num_classes=len(CODES), depth=2, image_size=size, embed_dim=32, **fields
    )


def hybrid(size: int = 64) -> MultiScaleViT:
    net = build_model(hybrid_config(size))
    assert isinstance(net, MultiScaleViT)
    assert isinstance(net.stem, LiteStem)
    return net


@pytest.mark.parametrize(
    "size", [(64, 64), (96, 96), (100, 100), (128, 128), (224, 224), (100, 160), (224, 96)]
)
def test_tokens_per_scale_match_the_plain_vit(size: tuple[int, int]) -> None:
    plain = build_model(hybrid_config(stem="patch")).eval()
    net = hybrid().eval()
    image = torch.randn(1, 3, *size)
    with torch.no_grad():
        ours = [t.shape for t in net.scale_tokens(image)]
        theirs = [t.shape for t in plain.scale_tokens(image)]
        out = net(image)
    assert ours == theirs
    assert torch.allclose(out.embedding.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_the_stem_loads_the_imagenet_weights_strictly() -> None:
    net = hybrid()
    load_stem_weights(net.stem)  # type: ignore[arg-type]
    state = read_imagenet_state()
    ours = net.stem.state_dict()  # type: ignore[union-attr]
    assert ours, "the stem has weights"
    for key, value in ours.items():
        assert torch.equal(value, state[key]), key
    assert not any(k.startswith("_blocks.11.") for k in ours)  # stages 6-7 are not in it


def test_the_stem_starts_from_a_fine_tuned_efficientnet_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    teacher_cfg = ModelConfig.from_variant(
        "tiny", num_classes=3, image_size=64, embed_dim=32, architecture="efficientnet_lite0"
    )
    teacher = build_model(teacher_cfg)
    assert isinstance(teacher, EfficientNetLite0)
    meta = CheckpointMeta(
        model=teacher_cfg,
        preprocessing=PreprocessConfig(image_size=(64, 64), mean=INPUT_MEAN, std=INPUT_STD),
        labels=LabelSpace.from_codes(CODES),
    )
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(path, teacher, meta)
    net = hybrid()
    load_stem_weights(net.stem, path)  # type: ignore[arg-type]
    wanted = teacher.backbone.state_dict()
    for key, value in net.stem.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(value, wanted[key]), key


def test_weights_without_a_stem_are_refused_by_name(tmp_path: Path) -> None:
    vit = build_model(hybrid_config(stem="patch"))
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    with pytest.raises(PretrainedWeightsError, match="no EfficientNet-Lite0 stem: missing"):
        load_stem_weights(LiteStem(), path)
    state = {k: v.clone() for k, v in read_imagenet_state().items()}
    state["_conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(PretrainedWeightsError, match=r"wrong shape: _conv_stem\.weight"):
        load_stem_weights(LiteStem(), bad)
    with pytest.raises(PretrainedWeightsError, match="no weights file"):
        load_stem_weights(LiteStem(), tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(PretrainedWeightsError, match="cannot read weights"):
        load_stem_weights(LiteStem(), corrupt)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stem": "resnet"}, "unknown stem"),
        ({"architecture": "efficientnet_lite0"}, "stem is for the ViT"),
        ({"patch_size": 8}, "not a multiple of the efficientnet_lite0 stem's stride 16"),
    ],
)
def test_impossible_stems_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        hybrid_config(**overrides)


def test_a_hybrid_checkpoint_round_trips_and_is_explained(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = hybrid_config()
    net = build_model(cfg)
    load_stem_weights(net.stem)  # type: ignore[arg-type]
    pre = PreprocessConfig(image_size=(64, 64), mean=INPUT_MEAN, std=INPUT_STD)
    meta = CheckpointMeta(model=cfg, preprocessing=pre, labels=LabelSpace.from_codes(CODES))
    path = tmp_path / "hybrid.safetensors"
    save_checkpoint(path, net, meta)
    loaded = load_checkpoint(path)
    assert loaded.meta.model.stem == "efficientnet_lite0"
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net.eval()(images).embedding, loaded.model(images).embedding)
    canvases = (torch.rand(2, 3, 64, 64) * 255).to(torch.uint8)
    assert isinstance(loaded.model, MultiScaleViT)
    first = explain_similarity(
        loaded.model, canvases[0], canvases[1], pre, torch.device("cpu"), class_index=0
    )
    again = explain_similarity(
        loaded.model, canvases[0], canvases[1], pre, torch.device("cpu"), class_index=0
    )
    assert first.query_map.shape == first.case_map.shape == (4, 4)  # the finest 16-px grid
    for grid in (first.query_map, first.case_map):
        assert grid.min() >= 0.0
        assert float(grid.max()) in (0.0, pytest.approx(1.0))
    with torch.no_grad():
        unit = loaded.model(normalise(canvases, pre)).embedding
    assert first.score == pytest.approx(float(unit[0] @ unit[1]), abs=1e-5)
    np.testing.assert_array_equal(first.query_map, again.query_map)
    assert first.class_map is not None
    assert first.class_map.shape == (4, 4)


def test_old_checkpoint_descriptions_are_plain_vits() -> None:
    data = hybrid_config(stem="patch").to_dict()
    del data["stem"]  # written before the field existed
    assert ModelConfig.from_dict(data).stem == "patch"
    assert Task(ModelConfig.from_dict(data).task) is Task.SINGLE_LABEL
