from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from labels import Task
from model.architectures import build_model
from model.config import VARIANTS, ConfigError, ModelConfig
from model.vit import Attention, probabilities, pyramid_sizes, token_counts


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((224, 224), [196, 49, 9, 1]),
        ((256, 192), [192, 48, 12, 2]),
        ((64, 64), [16, 4]),
        ((32, 32), [4]),
    ],
)
def test_token_count_per_scale(size: tuple[int, int], expected: list[int]) -> None:
    assert token_counts(*size) == expected
    cfg = ModelConfig.from_variant("tiny", num_classes=3, depth=1, image_size=size)
    model = build_model(cfg).eval()
    per_scale = model.scale_tokens(torch.zeros(2, 3, *size))
    assert [t.shape[1] for t in per_scale] == expected
    assert all(t.shape[0] == 2 and t.shape[2] == 192 for t in per_scale)


def test_pyramid_halves_while_smallest_side_above_16() -> None:
    assert pyramid_sizes(224, 224) == [(224, 224), (112, 112), (56, 56), (28, 28)]
    assert pyramid_sizes(256, 192) == [(256, 192), (128, 96), (64, 48), (32, 24)]
    assert pyramid_sizes(224, 224, multiscale=False) == [(224, 224)]


def test_single_scale_is_plain_vit16() -> None:
    assert token_counts(224, 224, multiscale=False) == [196]


def _all_encodings(model: torch.nn.Module, size: int) -> torch.Tensor:
    cfg = model.cfg
    codes = []
    for level, (h, w) in enumerate(pyramid_sizes(size, size)):
        grid = (h // cfg.patch_size, w // cfg.patch_size)
        codes.append(model.pos(level, grid, (h, w), cfg.patch_size))
    return torch.cat(codes)


def test_encoding_separates_scales_and_positions() -> None:
    model = build_model(ModelConfig.from_variant("tiny", num_classes=2, depth=1)).eval()
    with torch.no_grad():
        codes = _all_encodings(model, 224)
    assert codes.shape == (255, 192)
    distances = torch.cdist(codes, codes)
    distances.fill_diagonal_(math.inf)
    # every (scale, x, y) has its own code: nearest other code is far from zero
    assert distances.min().item() > 0.05
    # the scale level is recoverable: a code is closer to its own level's scale vector
    # than the same spatial code at any other level
    scale = model.pos.scale.detach()
    for a, b in itertools.combinations(range(4), 2):
        assert (scale[a] - scale[b]).norm() > 0.05


def test_same_physical_location_is_related_across_scales() -> None:
    model = build_model(ModelConfig.from_variant("tiny", num_classes=2, depth=1)).eval()
    pos = model.pos
    with torch.no_grad():
        fine = pos(0, (14, 14), (224, 224), 16) - pos.scale[0]  # spatial part, level 0
        coarse = pos(1, (7, 7), (112, 112), 16) - pos.scale[1]  # spatial part, level 1
    fine = fine.reshape(14, 14, -1)
    coarse = coarse.reshape(7, 7, -1)
    # a level-1 patch covers exactly 2×2 level-0 patches; its centre lies midway between
    # their centres, so its spatial code is their average
    for i, j in [(0, 0), (3, 4), (6, 6)]:
        block = fine[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].reshape(4, -1).mean(0)
        torch.testing.assert_close(coarse[i, j], block, atol=1e-5, rtol=1e-5)
    # and the level-0 spatial code is the positional table itself, as in a plain ViT
    torch.testing.assert_close(fine.permute(2, 0, 1), pos.grid[0].detach())


CASES = [
    (variant, multiscale, task)
    for variant in VARIANTS
    for multiscale in (True, False)
    for task in Task
]


@pytest.mark.parametrize(("variant", "multiscale", "task"), CASES)
def test_forward_backward_every_variant(variant: str, multiscale: bool, task: Task) -> None:
    cfg = ModelConfig.from_variant(
        variant, num_classes=5, depth=1, multiscale=multiscale, task=task, image_size=64
    )
    model = build_model(cfg).train()
    out = model(torch.randn(3, 3, 64, 64))
    assert out.embedding.shape == (3, cfg.embed_dim)
    assert out.logits.shape == (3, 5)
    target = (
        torch.tensor([0, 1, 4])
        if task is Task.SINGLE_LABEL
        else torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]]).float()
    )
    loss_fn = F.cross_entropy if task is Task.SINGLE_LABEL else F.binary_cross_entropy_with_logits
    loss = loss_fn(out.logits, target) + (1 - out.embedding[0] @ out.embedding[1])
    loss.backward()
    levels_used = len(pyramid_sizes(64, 64, multiscale=multiscale))
    for name, param in model.named_parameters():
        if name == "pos.scale":
            assert param.grad is not None
            assert param.grad[:levels_used].abs().sum() > 0
            assert param.grad[levels_used:].abs().sum() == 0
            continue
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_variants_have_the_named_sizes() -> None:
    for name, width, heads in [("tiny", 192, 3), ("small", 384, 6), ("base", 768, 12)]:
        cfg = ModelConfig.from_variant(name, num_classes=7)
        assert (cfg.width, cfg.heads, cfg.depth) == (width, heads, 12)
    assert ModelConfig.from_variant("tiny", num_classes=7, depth=4).depth == 4
    with pytest.raises(ConfigError, match="unknown variant"):
        ModelConfig.from_variant("huge", num_classes=7)


@pytest.mark.parametrize("size", [(224, 224), (256, 192), (32, 32)])
def test_embedding_has_unit_norm(size: tuple[int, int]) -> None:
    cfg = ModelConfig.from_variant("tiny", num_classes=4, depth=2)
    model = build_model(cfg).eval()
    with torch.no_grad():
        emb = model.forward_embedding(torch.randn(4, 3, *size) * 3)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))


def test_eval_is_deterministic_and_dropout_is_active_in_training() -> None:
    cfg = ModelConfig.from_variant("tiny", num_classes=4, depth=2, image_size=64)
    assert cfg.dropout == 0.1
    model = build_model(cfg)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, model(x).logits)
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x).logits, model(x).logits)


def test_attention_matches_explicit_softmax_attention() -> None:
    attn = Attention(width=48, heads=4, attn_dropout=0.0, dropout=0.0).eval()
    x = torch.randn(2, 10, 48)
    b, n, d = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, 4, d // 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // 4), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, d))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_multi_scale_sees_what_single_scale_does_not() -> None:
    """The coarse scales change the [CLS] output: multi-scale is not a no-op."""
    single = build_model(ModelConfig.from_variant("tiny", num_classes=2, depth=1, multiscale=False))
    multi = build_model(ModelConfig.from_variant("tiny", num_classes=2, depth=1))
    multi.load_state_dict(single.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert not torch.allclose(single.eval()(x).embedding, multi.eval()(x).embedding)


def test_probabilities_follow_the_task() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    assert probabilities(logits, Task.SINGLE_LABEL).sum().item() == pytest.approx(1.0)
    multi = probabilities(logits, Task.MULTI_LABEL)
    torch.testing.assert_close(multi, torch.sigmoid(logits))


@pytest.mark.parametrize(
    "overrides",
    [{"width": 100, "heads": 3}, {"depth": 0}, {"image_size": 8}, {"dropout": 1.5}],
)
def test_invalid_configs_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ModelConfig.from_variant("tiny", num_classes=2, **overrides)


def test_config_round_trips_through_dict() -> None:
    cfg = ModelConfig.from_variant(
        "small", num_classes=14, task="multi_label", image_size=(256, 192), depth=3
    )
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "colour": "blue"})


def test_forward_with_features_is_forward_plus_the_cls_features() -> None:
    cfg = ModelConfig.from_variant("tiny", num_classes=3, depth=1, image_size=32, embed_dim=8)
    model = build_model(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features, out = model.forward_with_features(x)
        plain = model(x)
        assert torch.equal(features, model.forward_features(x))
    assert features.shape == (2, cfg.width)
    assert torch.equal(out.embedding, plain.embedding)
    assert torch.equal(out.logits, plain.logits)
