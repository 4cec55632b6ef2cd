"""Distillation's soft targets: the teacher's logits for every training image, computed
once at the teacher's own canvas size and normalisation (training/teacher.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archives.content import load_pixels
from imaging.preprocessing import fit_to_canvas
from model.checkpoint import load_checkpoint
from model.inference import infer
from support.checkpoints import make_checkpoint
from training.config import load_config
from training.data import training_data
from training.distributed import SINGLE_PROCESS
from training.errors import TrainingError
from training.loop import Trainer, train
from training.teacher import soft_targets

CPU = torch.device("cpu")


def run_settings(data: Path, out: Path, cache: Path, **extra: object) -> list[str]:
    settings: dict[str, object] = {
        "data.path": str(data),
        "data.cache_dir": str(cache),
        "data.workers": 0,
        "out_dir": str(out),
        "model.variant": "tiny",
        "model.depth": 1,
        "model.image_size": 32,
        "model.embed_dim": 16,
        "batch_size": 12,
        "samples_per_class": 4,
        "batches_per_epoch": 2,
        "device": "cpu",
        "tensorboard": False,
        **extra,
    }
    return [f"{k}={v}" for k, v in settings.items()]


@pytest.fixture(scope="module")
def teacher(tiny_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An EfficientNet-Lite0 teacher fine-tuned for a few steps at 48 px (the student: 32)."""
    root = tmp_path_factory.mktemp("teacher")
    cfg = load_config(
        None,
        run_settings(
            tiny_manifest,
            root / "run",
            root / "cache",
            **{
                "model.architecture": "efficientnet_lite0",
                "model.pretrained": "efficientnet_lite0_imagenet",
                "model.image_size": 48,
                "phases": "[{epochs: 1, ce: 1}]",
            },
        ),
    )
    result = train(cfg, progress=False)
    assert result.best_path is not None
    return result.best_path


def test_soft_targets_are_the_teachers_logits_at_its_own_size(
    teacher: Path, tiny_manifest: Path, tmp_path: Path
) -> None:
    cfg = load_config(None, run_settings(tiny_manifest, tmp_path / "run", tmp_path / "cache"))
    data = training_data(cfg, SINGLE_PROCESS, progress=False)
    samples = data.splits["train"].samples
    loaded = load_checkpoint(teacher, CPU)
    loaded.model.eval()
    out = soft_targets(loaded, samples, cfg, CPU, progress=False)
    targets = out.logits
    assert targets.shape == (len(samples), len(loaded.meta.labels.codes))
    size = loaded.meta.preprocessing.image_size
    assert size == (48, 48)  # not the student's 32
    some = [0, len(samples) // 2, len(samples) - 1]
    canvases = torch.stack([fit_to_canvas(load_pixels(samples[i]), size) for i in some])
    expected = infer(loaded.model, canvases, loaded.meta.preprocessing, CPU).logits
    torch.testing.assert_close(targets[some], expected.float(), rtol=1e-4, atol=1e-4)
    # the targets say something: the teacher does not give every image the same logits
    assert float(targets.std(dim=0).min()) > 0
    # the embeddings for geometry distillation: unit vectors centred on their mean
    every = torch.stack([fit_to_canvas(load_pixels(s), size) for s in samples])
    raw = infer(loaded.model, every, loaded.meta.preprocessing, CPU).embeddings.float()
    centred = torch.nn.functional.normalize(raw - raw.mean(dim=0), dim=1)
    torch.testing.assert_close(out.embedding, centred, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(len(samples)))


def test_a_student_distils_from_a_teacher_of_another_architecture_and_size(
    teacher: Path, tiny_manifest: Path, tmp_path: Path
) -> None:
    phases = "[{epochs: 1, ce: 0.5, contrastive: 0.2, triplet: 0.2, distill: 1.0, geometry: 1.0}]"
    settings = run_settings(tiny_manifest, tmp_path / "run", tmp_path / "cache", phases=phases)
    overrides = [*settings, f"loss.teacher={teacher}", "loss.distill_targets=hard"]
    trainer = Trainer(load_config(None, overrides), progress=False)
    assert trainer.teacher_out is not None
    assert trainer.teacher_out.logits.shape[0] == len(trainer.data.splits["train"].samples)
    assert trainer.teacher_out.embedding.shape[0] == len(trainer.data.splits["train"].samples)
    result = trainer.run()
    assert result.best_path is not None
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["loss"]["distill"] > 0
    assert last["loss"]["geometry"] > 0


def test_a_teacher_of_other_classes_is_refused(tiny_manifest: Path, tmp_path: Path) -> None:
    other = make_checkpoint(tmp_path / "other.safetensors", ("x", "y", "z", "w"), size=32)
    phases = "[{epochs: 1, ce: 1, distill: 1}]"
    settings = run_settings(tiny_manifest, tmp_path / "run", tmp_path / "cache", phases=phases)
    overrides = [*settings, f"loss.teacher={other}"]
    with pytest.raises(TrainingError, match=r"the teacher .* predicts"):
        Trainer(load_config(None, overrides), progress=False)
