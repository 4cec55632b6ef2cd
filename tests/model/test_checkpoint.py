from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import model.checkpoint as checkpoint_module
from imaging.preprocessing import PreprocessConfig
from labels import LabelSpace, Task
from model.architectures import build_model
from model.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from model.config import ModelConfig

HAM_NAMES = {"MEL": "Melanoma", "NV": "Melanocytic nevus", "BCC": "Basal cell carcinoma"}


def make_meta(**model_overrides: object) -> CheckpointMeta:
    cfg = ModelConfig.from_variant("tiny", num_classes=3, depth=2, image_size=64, **model_overrides)
    return CheckpointMeta(
        model=cfg,
        labels=LabelSpace.from_codes(["MEL", "NV", "BCC"], HAM_NAMES),
        preprocessing=PreprocessConfig(image_size=(64, 64)),
        training={"epochs": 3, "dataset": "ham10000"},
    )


def test_round_trip_rebuilds_the_same_network(tmp_path: Path) -> None:
    meta = make_meta(task=Task.SINGLE_LABEL)
    net = build_model(meta.model).eval()
    digest = save_checkpoint(tmp_path / "ckpt.safetensors", net, meta)
    loaded = load_checkpoint(tmp_path / "ckpt.safetensors")
    assert loaded.meta == meta
    assert loaded.sha256 == digest
    assert digest == hashlib.sha256((tmp_path / "ckpt.safetensors").read_bytes()).hexdigest()
    assert not loaded.model.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).embedding, net(x).embedding)
    assert loaded.meta.labels.names == ("Melanoma", "Melanocytic nevus", "Basal cell carcinoma")
    assert read_checkpoint_meta(tmp_path / "ckpt.safetensors").training["dataset"] == "ham10000"


def test_saved_checkpoint_is_readable_by_the_service_user(tmp_path: Path) -> None:
    meta = make_meta()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, build_model(meta.model), meta)
    assert path.stat().st_mode & 0o044 == 0o044  # group and others may read it (umask 022)


def test_hash_is_the_identity(tmp_path: Path) -> None:
    meta = make_meta()
    net = build_model(meta.model)
    first = save_checkpoint(tmp_path / "a.safetensors", net, meta)
    again = save_checkpoint(tmp_path / "b.safetensors", net, meta)
    assert first == again  # same weights and description → same identity
    with torch.no_grad():
        net.classifier.fc2.bias.add_(1e-3)
    changed = save_checkpoint(tmp_path / "c.safetensors", net, meta)
    assert changed != first


def test_failed_save_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    meta = make_meta()
    net = build_model(meta.model)
    target = tmp_path / "ckpt.safetensors"
    digest = save_checkpoint(target, net, meta)

    def explode(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, net, meta)
    assert load_checkpoint(target).sha256 == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def _rewrite(path: Path, *, tensors=None, description=None) -> None:
    original = load_file(str(path))
    with __import__("safetensors").safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    if description is not None:
        metadata = {"medret": description(json.loads(metadata["medret"]))}
    save_file(tensors(original) if tensors else original, str(path), metadata=metadata)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda p: p.write_bytes(b"PK\x03\x04 not a checkpoint"), "not a safetensors checkpoint"),
        (lambda p: p.write_bytes(p.read_bytes()[:200]), "not a safetensors checkpoint"),
        (
            lambda p: save_file({"x": torch.zeros(1)}, str(p)),
            "safetensors file but not a medret checkpoint",
        ),
        (
            lambda p: _rewrite(p, description=lambda d: json.dumps(d | {"format_version": 99})),
            "format version 99 is not supported",
        ),
        (
            lambda p: _rewrite(p, description=lambda d: "{not json"),
            "not valid JSON",
        ),
        (
            lambda p: _rewrite(
                p,
                description=lambda d: json.dumps(d | {"labels": {"codes": ["A"], "names": ["A"]}}),
            ),
            "3 classes but the label space lists 1",
        ),
        (  # a bad label list is a CheckpointError where a checkpoint is read, message as is
            lambda p: _rewrite(
                p,
                description=lambda d: json.dumps(
                    d | {"labels": {"codes": ["A", "A", "B"], "names": ["A", "A", "B"]}}
                ),
            ),
            r"^class codes are not unique: \['A', 'A', 'B'\]$",
        ),
        (
            lambda p: _rewrite(
                p,
                description=lambda d: json.dumps(
                    d | {"labels": {"codes": ["A", "B", "C"], "names": ["A", "B"]}}
                ),
            ),
            "^3 class codes but 2 class names$",
        ),
        (
            lambda p: _rewrite(
                p,
                description=lambda d: json.dumps(d | {"model": d["model"] | {"depth": 3}}),
            ),
            "weights do not fit.*missing",
        ),
        (
            lambda p: _rewrite(p, tensors=lambda t: {k: v for k, v in t.items() if "fc2" not in k}),
            "weights do not fit",
        ),
        (
            lambda p: _rewrite(p, tensors=lambda t: t | {"cls_token": torch.zeros(1, 1, 7)}),
            r"cls_token has shape \(1, 1, 7\)",
        ),
        (
            lambda p: _rewrite(
                p,
                description=lambda d: json.dumps(
                    d | {"preprocessing": d["preprocessing"] | {"image_size": [96, 96]}}
                ),
            ),
            "preprocessing makes",
        ),
    ],
)
def test_bad_checkpoints_fail_clearly(tmp_path: Path, tamper, message: str) -> None:
    path = tmp_path / "ckpt.safetensors"
    meta = make_meta()
    save_checkpoint(path, build_model(meta.model), meta)
    tamper(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_missing_checkpoint_and_mismatched_save(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.safetensors")
    meta = make_meta()
    other = build_model(ModelConfig.from_variant("tiny", num_classes=3, depth=1, image_size=64))
    with pytest.raises(CheckpointError, match="config differs"):
        save_checkpoint(tmp_path / "x.safetensors", other, meta)
