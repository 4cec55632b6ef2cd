"""Starting from plain ViT/16 weights in the common ``vit_*_patch16_224`` layout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import save_file

from model.architectures import build_model
from model.config import ModelConfig
from model.pretrained import PretrainedWeightsError, load_pretrained_vit

WIDTH, HEADS, DEPTH = 192, 3, 3


def make_vit_state_dict(depth: int = DEPTH, width: int = WIDTH, extra: bool = True) -> dict:
    """A random state dict shaped like an ImageNet ``vit_tiny_patch16_224``."""
    g = torch.Generator().manual_seed(1)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.05

    sd = {
        "cls_token": r(1, 1, width),
        "pos_embed": r(1, 197, width),
        "patch_embed.proj.weight": r(width, 3, 16, 16),
        "patch_embed.proj.bias": r(width),
        "norm.weight": 1 + r(width),
        "norm.bias": r(width),
    }
    if extra:
        sd["head.weight"] = r(1000, width)
        sd["head.bias"] = r(1000)
    for i in range(depth):
        p = f"blocks.{i}."
        sd |= {
            p + "norm1.weight": 1 + r(width),
            p + "norm1.bias": r(width),
            p + "attn.qkv.weight": r(3 * width, width),
            p + "attn.qkv.bias": r(3 * width),
            p + "attn.proj.weight": r(width, width),
            p + "attn.proj.bias": r(width),
            p + "norm2.weight": 1 + r(width),
            p + "norm2.bias": r(width),
            p + "mlp.fc1.weight": r(4 * width, width),
            p + "mlp.fc1.bias": r(4 * width),
            p + "mlp.fc2.weight": r(width, 4 * width),
            p + "mlp.fc2.bias": r(width),
        }
    return sd


def reference_vit_cls(sd: dict, x: torch.Tensor, depth: int) -> torch.Tensor:
    """A plain ViT/16 forward written from the paper's equations, independent of model/."""
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=16)
    tokens = tokens.flatten(2).transpose(1, 2)
    cls = sd["cls_token"].expand(x.shape[0], -1, -1)
    h = torch.cat([cls, tokens], dim=1) + sd["pos_embed"]
    b, n, d = h.shape
    for i in range(depth):
        p = f"blocks.{i}."
        y = F.layer_norm(h, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        q, k, v = qkv.reshape(b, n, 3, HEADS, d // HEADS).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // HEADS), dim=-1) @ v
        h = h + F.linear(
            att.transpose(1, 2).reshape(b, n, d),
            sd[p + "attn.proj.weight"],
            sd[p + "attn.proj.bias"],
        )
        y = F.layer_norm(h, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.linear(
            F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
            sd[p + "mlp.fc2.weight"],
            sd[p + "mlp.fc2.bias"],
        )
        h = h + y
    return F.layer_norm(h[:, 0], (d,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_single_scale_model_reproduces_the_pretrained_vit(tmp_path: Path, suffix: str) -> None:
    sd = make_vit_state_dict()
    path = tmp_path / f"vit_tiny_patch16_224{suffix}"
    if suffix == ".pth":
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        save_file(sd, str(path))
    cfg = ModelConfig.from_variant("tiny", num_classes=7, depth=DEPTH, multiscale=False)
    model = build_model(cfg).eval()
    report = load_pretrained_vit(model, path)

    assert "head.weight" in report.dropped
    assert "pos.grid" in report.loaded
    assert "blocks.2.attn.qkv.weight" in report.loaded
    assert {"pos.scale", "embed_head.fc1.weight", "classifier.fc2.weight"} <= set(report.fresh)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        # our level-0 scale vector is an addition the plain ViT does not have
        model.pos.scale.zero_()
        ours = model.forward_features(x)
    torch.testing.assert_close(ours, reference_vit_cls(sd, x, DEPTH), atol=2e-4, rtol=1e-4)


def test_multiscale_model_loads_the_same_weights(tmp_path: Path) -> None:
    sd = make_vit_state_dict()
    path = tmp_path / "vit.safetensors"
    save_file(sd, str(path))
    model = build_model(ModelConfig.from_variant("tiny", num_classes=7, depth=DEPTH))
    load_pretrained_vit(model, path)
    torch.testing.assert_close(model.patch_embed.proj.weight, sd["patch_embed.proj.weight"])
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])
    cls_expected = sd["cls_token"] + sd["pos_embed"][:, :1]
    torch.testing.assert_close(model.cls_token, cls_expected)
    out = model(torch.randn(1, 3, 224, 224))
    assert torch.isfinite(out.logits).all()


def test_shallower_model_takes_the_first_blocks_and_grid_is_resized(tmp_path: Path) -> None:
    sd = make_vit_state_dict(depth=4)
    path = tmp_path / "vit.pth"
    torch.save(sd, path)
    model = build_model(ModelConfig.from_variant("tiny", num_classes=2, depth=2, image_size=128))
    report = load_pretrained_vit(model, path)
    assert "blocks.3.mlp.fc1.weight" in report.dropped
    assert model.pos.grid.shape == (1, WIDTH, 8, 8)
    table = sd["pos_embed"][0, 1:].reshape(14, 14, WIDTH).permute(2, 0, 1)
    # resizing keeps the table's overall layout: corner codes stay near their corners
    grid = model.pos.grid[0].detach()
    assert F.cosine_similarity(grid[:, 0, 0], table[:, 0, 0], dim=0) > 0.5


def test_table_without_class_entry_is_accepted(tmp_path: Path) -> None:
    sd = make_vit_state_dict()
    sd["pos_embed"] = sd["pos_embed"][:, 1:]
    path = tmp_path / "vit.pth"
    torch.save(sd, path)
    model = build_model(ModelConfig.from_variant("tiny", num_classes=2, depth=DEPTH))
    load_pretrained_vit(model, path)
    torch.testing.assert_close(model.cls_token, sd["cls_token"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda sd: sd, "pretrained width 192 does not match the model's 384"),
        (lambda sd: {k: v for k, v in sd.items() if k != "pos_embed"}, "not a ViT state dict"),
        (lambda sd: sd | {"blocks.0.ls1.gamma": torch.ones(192)}, "no counterpart"),
    ],
)
def test_unusable_weights_are_refused(tmp_path: Path, mutate, message: str) -> None:
    path = tmp_path / "vit.pth"
    torch.save(mutate(make_vit_state_dict()), path)
    variant = "small" if "width" in message else "tiny"
    model = build_model(ModelConfig.from_variant(variant, num_classes=2, depth=DEPTH))
    with pytest.raises(PretrainedWeightsError, match=message):
        load_pretrained_vit(model, path)


def test_too_few_blocks_and_bad_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "vit.pth"
    torch.save(make_vit_state_dict(depth=1), path)
    model = build_model(ModelConfig.from_variant("tiny", num_classes=2, depth=DEPTH))
    with pytest.raises(PretrainedWeightsError, match="has 1 blocks, the model needs 3"):
        load_pretrained_vit(model, path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(PretrainedWeightsError, match="cannot read weights"):
        load_pretrained_vit(model, garbage)
    with pytest.raises(PretrainedWeightsError, match="no weights file"):
        load_pretrained_vit(model, tmp_path / "missing.pth")
