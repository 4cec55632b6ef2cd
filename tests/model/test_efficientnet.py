"""EfficientNet-Lite0: its packaged ImageNet weights load strictly and work, and it is an
architecture of the checkpoint format like the ViT (forward, backward, save, load, infer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from imaging.preprocessing import PreprocessConfig, fit_to_canvas, normalise
from labels import LabelSpace, Task
from model.architectures import build_model
from model.checkpoint import CheckpointMeta, load_checkpoint, read_checkpoint_meta, save_checkpoint
from model.config import ConfigError, ModelConfig
from model.efficientnet import (
    INPUT_MEAN,
    INPUT_STD,
    EfficientNetLite0,
    PretrainedWeightsError,
    imagenet_classifier,
    load_imagenet_weights,
    read_imagenet_state,
    same_padding,
)
from model.inference import infer
from model.vit import MultiScaleViT

CODES = ("MEL", "NV", "BCC")
PRE = PreprocessConfig(image_size=(64, 64), mean=INPUT_MEAN, std=INPUT_STD)


def lite_config(size: int | tuple[int, int] = 64, **overrides: object) -> ModelConfig:
    return ModelConfig.from_variant(
        "tiny",
        num_classes=len(CODES),
        image_size=size,
        embed_dim=32,
        architecture="efficientnet_lite0",
        **overrides,
    )


@pytest.fixture(scope="module")
def imagenet_state() -> dict[str, torch.Tensor]:
    return read_imagenet_state()


@pytest.fixture(scope="module")
def ham_canvases(shared_data: Path) -> torch.Tensor:
    """Eight real dermoscopy images as 160 px uint8 canvases (8, 3, 160, 160)."""
    files = sorted((shared_data / "ham10000" / "images").glob("*.jpg"))[:8]
    return torch.stack(
        [fit_to_canvas(np.asarray(Image.open(f).convert("RGB")), (160, 160)) for f in files]
    )


# --------------------------------------------------------------------------- padding


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [
        (160, 3, 2, (0, 1)),
        (161, 3, 2, (1, 1)),
        (20, 5, 2, (1, 2)),
        (7, 5, 1, (2, 2)),
        (1, 1, 1, (0, 0)),
    ],
)
def test_same_padding_is_tensorflows(
    size: int, kernel: int, stride: int, expected: tuple[int, int]
) -> None:
    assert same_padding(size, kernel, stride) == expected


def test_a_stride_two_convolution_gives_ceil_of_half_the_size() -> None:
    net = build_model(lite_config()).eval()
    with torch.no_grad():
        stem = net.backbone._conv_stem(torch.zeros(1, 3, 97, 160))
    assert tuple(stem.shape[-2:]) == (49, 80)


# --------------------------------------------------------------------------- weights


def test_the_imagenet_weights_load_strictly(imagenet_state: dict[str, torch.Tensor]) -> None:
    net = build_model(lite_config())
    assert isinstance(net, EfficientNetLite0)
    heads_before = {k: v.clone() for k, v in net.state_dict().items() if "backbone" not in k}
    load_imagenet_weights(net)
    backbone = net.backbone.state_dict()
    assert set(backbone) == set(imagenet_state) - {"_fc.weight", "_fc.bias"}
    for key, value in backbone.items():
        assert torch.equal(value, imagenet_state[key]), key
    for key, value in net.state_dict().items():  # the heads keep their initialisation
        if key in heads_before:
            assert torch.equal(value, heads_before[key]), key


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (
            lambda s: s.update(
                {"_blocks.3._dw_conv.weight": s.pop("_blocks.3._depthwise_conv.weight")}
            ),
            "_blocks.3._depthwise_conv.weight",
        ),
        (
            lambda s: s.update({"_conv_head.weight": s["_conv_head.weight"][:640]}),
            "_conv_head.weight (640, 320, 1, 1)",
        ),
        (
            lambda s: s.update({"_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)}),
            "unexpected: _blocks.0._se_reduce.weight",
        ),
        (lambda s: s.pop("_bn1.running_var"), "missing: _bn1.running_var"),
    ],
    ids=["renamed", "reshaped", "extra", "missing"],
)
def test_a_tampered_state_dict_is_refused_naming_the_key(
    tmp_path: Path, imagenet_state: dict[str, torch.Tensor], tamper: object, named: str
) -> None:
    state = dict(imagenet_state)
    tamper(state)  # type: ignore[operator]
    path = tmp_path / "tampered.pth"
    torch.save(state, path)
    net = EfficientNetLite0(lite_config())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(PretrainedWeightsError, match="not an EfficientNet-Lite0") as caught:
        load_imagenet_weights(net, path)
    assert named in str(caught.value)
    for key, value in net.state_dict().items():  # nothing was half-loaded
        assert torch.equal(value, before[key]), key


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(PretrainedWeightsError, match="cannot read weights"):
        load_imagenet_weights(EfficientNetLite0(lite_config()), bad)
    with pytest.raises(PretrainedWeightsError, match="cannot read weights"):
        read_imagenet_state(tmp_path / "absent.pth")


def test_the_imagenet_classifier_is_confident_and_deterministic(
    ham_canvases: torch.Tensor,
) -> None:
    net = imagenet_classifier()
    x = normalise(ham_canvases, PRE)
    with torch.no_grad():
        p1 = net(x).softmax(-1)  # (8, 1000)
        p2 = net(x).softmax(-1)
    assert torch.equal(p1, p2)
    uniform_entropy = float(np.log(1000))
    entropy = -(p1 * p1.clamp_min(1e-12).log()).sum(-1)
    assert float(entropy.mean()) < 0.6 * uniform_entropy  # far from uniform
    assert float(p1.max(-1).values.mean()) > 0.1  # 100× chance
    random_net = torch.nn.Sequential(EfficientNetLite0(lite_config()).backbone).eval()
    with torch.no_grad():
        trained = net[0](x)  # (8, 1280) pooled head activations
        untrained = random_net(x)
    # Batch norm with the pretrained statistics keeps the head's activations in range;
    # images differ in their pretrained features much more than in untrained ones.
    assert 0.05 < float(trained.mean()) < 5.0
    spread = lambda f: float((f - f.mean(0)).norm(dim=-1).mean() / f.norm(dim=-1).mean())  # noqa: E731
    assert spread(trained) > 0.2
    assert spread(trained) > 2 * spread(untrained)


def test_the_weights_normalisation_fits_the_stem_statistics_best(
    ham_canvases: torch.Tensor,
) -> None:
    """The stem's batch-norm inputs lie nearer its running mean with [-1, 1] inputs than
    with ImageNet's mean/std: the reason the architecture brings its own normalisation."""
    backbone = imagenet_classifier()[0]
    bn = backbone._bn0
    deviations = {}
    for name, pre in (("lite", PRE), ("imagenet", PreprocessConfig(image_size=(64, 64)))):
        with torch.no_grad():
            stem = backbone._conv_stem(normalise(ham_canvases, pre))  # (8, 32, 80, 80)
        z = (stem.mean(dim=(0, 2, 3)) - bn.running_mean) / bn.running_var.sqrt()
        deviations[name] = float(z.abs().median())
    assert deviations["lite"] < deviations["imagenet"]


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize("task", [Task.SINGLE_LABEL, Task.MULTI_LABEL])
@pytest.mark.parametrize("size", [96, 160, (96, 160)])
def test_forward_and_backward(task: Task, size: int | tuple[int, int]) -> None:
    cfg = lite_config(size, task=task)
    net = build_model(cfg).train()
    h, w = cfg.image_size
    x = torch.randn(4, 3, h, w)
    features, out = net.forward_with_features(x)
    assert features.shape == (4, 1280)
    assert out.embedding.shape == (4, 32)
    assert out.logits.shape == (4, len(CODES))
    assert torch.allclose(out.embedding.norm(dim=-1), torch.ones(4), atol=1e-5)
    if task is Task.MULTI_LABEL:
        target = torch.randint(0, 2, (4, len(CODES))).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, target)
    else:
        loss = torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0]))
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert float(net.backbone._conv_stem.weight.grad.abs().sum()) > 0


def test_the_heads_read_the_features_as_the_vits_do() -> None:
    net = build_model(lite_config()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features, out = net.forward_with_features(x)
        assert torch.equal(net.forward_embedding(x), out.embedding)
        assert torch.equal(net.classifier(net.embed_head(features)), out.logits)
        assert torch.equal(net(x).logits, out.logits)


def test_inference_mode_is_deterministic_and_training_drops_blocks() -> None:
    torch.manual_seed(0)
    net = EfficientNetLite0(lite_config())
    load_imagenet_weights(net)
    x = torch.randn(8, 3, 64, 64)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x).embedding, net(x).embedding)
    net.train()
    with torch.no_grad():
        a, b = net.backbone(x), net.backbone(x)
    assert not torch.equal(a, b)  # drop-connect is on while training


def test_an_unknown_architecture_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'resnet'"):
        ModelConfig(num_classes=3, architecture="resnet")


# --------------------------------------------------------------------------- checkpoints


def lite_meta(cfg: ModelConfig, pre: PreprocessConfig = PRE) -> CheckpointMeta:
    return CheckpointMeta(model=cfg, labels=LabelSpace.from_codes(CODES), preprocessing=pre)


def test_a_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    cfg = lite_config()
    net = EfficientNetLite0(cfg)
    load_imagenet_weights(net)
    net.train()  # move the batch-norm statistics away from ImageNet's, as training does
    with torch.no_grad():
        net(torch.randn(8, 3, 64, 64) + 1.0)
    net.eval()
    path = tmp_path / "lite.safetensors"
    digest = save_checkpoint(path, net, lite_meta(cfg))
    assert read_checkpoint_meta(path).model.architecture == "efficientnet_lite0"
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, EfficientNetLite0)
    assert loaded.sha256 == digest
    assert not loaded.model.training
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected, got = net(x), loaded.model(x)
    assert torch.equal(expected.embedding, got.embedding)
    assert torch.equal(expected.logits, got.logits)


def test_vit_weights_under_an_efficientnet_description_are_refused(tmp_path: Path) -> None:
    vit_cfg = ModelConfig.from_variant("tiny", num_classes=3, depth=1, image_size=64)
    path = tmp_path / "vit.safetensors"
    save_checkpoint(path, build_model(vit_cfg), lite_meta(vit_cfg, PreprocessConfig((64, 64))))
    tensors = load_file(path)
    meta = lite_meta(lite_config())
    save_file(tensors, str(path), metadata={"medret": meta.to_json()})
    with pytest.raises(ValueError, match="weights do not fit"):
        load_checkpoint(path)


def test_an_old_vit_checkpoint_without_architecture_loads_as_vit(tmp_path: Path) -> None:
    cfg = ModelConfig.from_variant("tiny", num_classes=3, depth=1, image_size=64)
    meta = lite_meta(cfg, PreprocessConfig((64, 64)))
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, build_model(cfg), meta)
    old_json = meta.to_json().replace('"architecture": "vit", ', "")
    assert "architecture" not in old_json
    save_file(load_file(path), str(path), metadata={"medret": old_json})
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, MultiScaleViT)
    assert loaded.meta.model.architecture == "vit"
    legacy = Path(__file__).parents[1] / "compat" / "legacy_main" / "checkpoint.safetensors"
    assert "architecture" not in legacy.read_bytes()[:4096].decode("latin-1")
    assert isinstance(load_checkpoint(legacy).model, MultiScaleViT)


def test_the_one_inference_path_embeds_with_features(ham_canvases: torch.Tensor) -> None:
    cfg = lite_config(160)
    net = EfficientNetLite0(cfg)
    load_imagenet_weights(net)
    net.eval()
    pre = PreprocessConfig(image_size=(160, 160), mean=INPUT_MEAN, std=INPUT_STD)
    out = infer(net, ham_canvases, pre, torch.device("cpu"), with_features=True)
    assert out.features is not None
    assert out.features.shape == (8, 1280)
    assert out.embeddings.shape == (8, 32)
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(8), atol=1e-5)
    assert out.logits.shape == (8, 3)
    # different real images have different pretrained features
    sims = (
        torch.nn.functional.normalize(out.features, dim=-1)
        @ torch.nn.functional.normalize(out.features, dim=-1).T
    )
    assert float(sims[~torch.eye(8, dtype=torch.bool)].max()) < 0.999
    again = infer(net, ham_canvases, pre, torch.device("cpu"))
    assert torch.equal(again.embeddings, out.embeddings)
