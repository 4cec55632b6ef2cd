"""End-to-end training on tiny generated data: phases, checkpoints, resume after kill -9."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from training.config import load_config
from training.errors import TrainingError
from training.loop import Trainer, train
from training.state import STATE_FILE

REPO = Path(__file__).resolve().parents[2]


def tiny_overrides(data: Path, out: Path, cache: Path, **extra: object) -> list[str]:
    settings = {
        "data.path": str(data),
        "data.cache_dir": str(cache),
        "data.workers": 0,
        "out_dir": str(out),
        "model.variant": "tiny",
        "model.depth": 1,
        "model.image_size": 32,
        "model.embed_dim": 32,
        "batch_size": 12,
        "samples_per_class": 4,
        "batches_per_epoch": 3,
        "eval_batch_size": 64,
        "device": "cpu",
        "tensorboard": True,
        "phases": "[{epochs: 2, ce: 0.2, contrastive: 1, triplet: 1, lr_decay: 4},"
        " {epochs: 2, ce: 0.6, contrastive: 0.6, triplet: 0.6, lr_decay: 16},"
        " {epochs: 2, ce: 1, contrastive: 0.2, triplet: 0.2, lr_decay: 64}]",
    }
    settings.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in settings.items()]


def read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_training_runs_three_phases_and_writes_a_serving_checkpoint(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    cfg = load_config(None, tiny_overrides(tiny_manifest, tmp_path / "run", tmp_path / "cache"))
    result = train(cfg, progress=False)

    records = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["phase"] for r in records] == [1, 1, 2, 2, 3, 3]
    # weights move from metric losses to cross-entropy across the phases
    assert records[0]["weights"]["triplet"] == 1.0
    assert records[-1]["weights"]["ce"] == 1.0
    assert set(records[0]["loss"]) >= {"total", "ce", "contrastive", "triplet"}
    # the learning rate decays inside each phase and restarts at 4e-4 with each new one
    lrs = [r["lr"] for r in records]
    assert lrs[0] < 4e-4
    assert lrs[1] < lrs[0]
    assert lrs[2] > lrs[1]
    assert all(math.isfinite(r["loss"]["total"]) for r in records)
    assert all("macro_f1" in r["val"] for r in records)
    assert result.best_path == tmp_path / "run" / "best.safetensors"
    assert 1 <= result.best_epoch <= 6

    loaded = load_checkpoint(result.best_path)
    assert loaded.meta.labels.codes == ("DOTS", "PLAIN", "STRIPES")  # sorted: no known order
    assert loaded.meta.model.image_size == (32, 32)
    assert loaded.meta.training["epoch"] == result.best_epoch
    assert loaded.meta.training["config"]["model"]["depth"] == 1
    assert (tmp_path / "run" / "last.safetensors").exists()
    assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_an_existing_run_is_not_overwritten(tiny_manifest: Path, tmp_path: Path) -> None:
    overrides = tiny_overrides(tiny_manifest, tmp_path / "run", tmp_path / "cache")
    cfg = load_config(None, overrides)
    Trainer(cfg, progress=False).run(stop_after=1)
    with pytest.raises(TrainingError, match="--resume"):
        Trainer(cfg, progress=False).run()
    changed = load_config(None, [*overrides, "lr=0.001"])
    with pytest.raises(TrainingError, match=r"differs .* \['lr'\]"):
        Trainer(changed, progress=False).run(resume=True)


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / STATE_FILE, weights_only=False)["model"]


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tiny_manifest: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    extra = {"batches_per_epoch": 12, "model__image_size": 48}
    reference = tmp_path / "reference"
    train(
        load_config(None, tiny_overrides(tiny_manifest, reference, cache, **extra)), progress=False
    )

    run = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "medret",
        "train",
        *[a for o in tiny_overrides(tiny_manifest, run, cache, **extra) for a in ("--set", o)],
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 240
    while len(read_metrics(run)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-phase 2
    proc.wait()
    state_epoch = torch.load(run / STATE_FILE, weights_only=False)["epoch"]
    assert 3 <= state_epoch < 6, "the run should have been killed in the middle"
    assert len(read_metrics(run)) in (state_epoch, state_epoch - 1)

    resumed = Trainer(
        load_config(None, tiny_overrides(tiny_manifest, run, cache, **extra)), progress=False
    )
    result = resumed.run(resume=True)
    assert result.epochs_run == 6
    records = read_metrics(run)
    ref_records = read_metrics(reference)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    for got, want in zip(records, ref_records, strict=True):
        assert got["phase"] == want["phase"]
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)
        assert got["loss"]["total"] == pytest.approx(want["loss"]["total"], rel=1e-4)
    final, expected = _final_weights(run), _final_weights(reference)
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=1e-4, atol=1e-5)


def test_evaluate_command_writes_a_report(tiny_manifest: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(tiny_manifest, tmp_path / "run", tmp_path / "cache"))
    result = train(cfg, progress=False)
    out = tmp_path / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medret",
            "evaluate",
            "--checkpoint",
            str(result.best_path),
            "--data",
            str(tiny_manifest),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--workers",
            "0",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    headline = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    assert 0 <= headline["macro_f1"] <= 1
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"]["sha256"] == load_checkpoint(result.best_path).sha256
    assert report["dataset"]["query_split"] == "test"
    for name in ("report.md", "confusion_matrix.png", "roc_curves.png"):
        assert (out / name).stat().st_size > 0


def _medret(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medret", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "{empty}", "--out", "{tmp}/o"], "matches no dataset layout"),
        (["train", "--set", "model.depht=3"], "unknown key"),
        (["train", "--config", "{tmp}/nope.yaml"], "does not exist"),
        (["train", "--set", "model.variant=huge"], "unknown variant"),
        (["train", "--set", "batch_size=30"], "multiple of samples_per_class"),
        (["train", "--set", "lr=["], "not valid YAML"),
        (["train", "--set", "data.val_fraction=1.5"], "val_fraction"),
        (["train", "--set", "model.image_size=8"], "smaller than one"),
        (
            ["train", "--set", "phases=[{{epochs: 1, ce: 0, contrastive: 0, triplet: 0}}]"],
            "phase 1",
        ),
        (["train", "--epochs-per-phase", "0"], "must be at least 1"),
        (["train", "--data", "{manifest}", "--device", "gpu", "--out", "{tmp}/d"], "device"),
        (
            [
                "evaluate",
                "--checkpoint",
                "{tmp}/none.safetensors",
                "--data",
                "{empty}",
                "--out",
                "{tmp}/r",
            ],
            "no checkpoint",
        ),
        (
            ["evaluate", "--checkpoint", "x", "--data", "y", "--out", "z", "--batch-size", "0"],
            "must be at least 1",
        ),
        (["ablate", "--data", "{empty}", "--out", "{tmp}/a"], "matches no dataset layout"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, tiny_manifest: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    filled = [a.format(empty=empty, tmp=tmp_path, manifest=tiny_manifest) for a in args]
    proc = _medret(*filled)
    assert proc.returncode == 2, (filled, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " INFO " not in line and line.strip()]
    assert errors, proc.stderr
    assert message in errors[-1], proc.stderr


def test_ablation_trains_every_variant_and_writes_one_table(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    overrides = tiny_overrides(tiny_manifest, tmp_path / "abl", tmp_path / "cache")
    args = ["ablate", "--out", str(tmp_path / "abl")]
    for o in overrides:
        if not o.startswith("out_dir="):
            args += ["--set", o]
    args += ["--set", "batches_per_epoch=1"]
    proc = _medret(*args)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "abl" / "ablation.md").read_text()
    for title in ("ViT (single-scale", "ViT + multi-scale", "ViT + multi-loss", "full", "CNN"):
        assert title in table
    rows = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert set(rows) == {"vit", "vit_multiscale", "vit_multiloss", "full", "cnn"}
    # the switches really differ: single-scale variants and CE-only variants
    plain = torch.load(tmp_path / "abl" / "vit" / STATE_FILE, weights_only=False)["config"]
    full = torch.load(tmp_path / "abl" / "full" / STATE_FILE, weights_only=False)["config"]
    assert plain["model"]["multiscale"] is False
    assert full["model"]["multiscale"] is True
    assert all(p["triplet"] == 0 for p in plain["phases"])
    assert any(p["triplet"] > 0 for p in full["phases"])
    assert (tmp_path / "abl" / "cnn" / "best.pt").exists()
    # a second run reuses the finished variants instead of training them again
    again = _medret(*args)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "abl" / "ablation.md").read_text() == table


@pytest.mark.slow
def test_torchrun_two_processes(tiny_manifest: Path, tmp_path: Path) -> None:
    """DistributedDataParallel on the CPU (gloo): two ranks, one writer."""
    out = tmp_path / "ddp"
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "medret",
        "train",
    ]
    for o in tiny_overrides(tiny_manifest, out, tmp_path / "cache", batches_per_epoch=4):
        args += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(out)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]  # one writer, no duplicates
    assert load_checkpoint(out / "best.safetensors").meta.training["epoch"] >= 1
    assert proc.stdout.count("best checkpoint:") == 1


def test_validation_can_search_the_validation_split_itself(
    tiny_manifest: Path, tmp_path: Path
) -> None:
    """``val_gallery: val``: each epoch embeds the validation images only (leave-one-out)."""
    trainers = {
        gallery: Trainer(
            load_config(
                None,
                tiny_overrides(
                    tiny_manifest, tmp_path / gallery, tmp_path / "cache", val_gallery=gallery
                ),
            ),
            progress=False,
        )
        for gallery in ("train", "val")
    }
    counts = {gallery: t.validate()[1]["counts"] for gallery, t in trainers.items()}
    sizes = {split: len(d.samples) for split, d in trainers["val"].data.splits.items()}
    assert counts["train"]["gallery"] == sizes["train"]
    assert counts["val"]["gallery"] == sizes["val"] == counts["val"]["queries"]
    with pytest.raises(ValueError, match="val_gallery is 'train' or 'val'"):
        load_config(None, ["val_gallery=test"])
    # selecting on a retrieval score: leave-one-out would be optimistic, so the training
    # split stays the gallery
    by_map = Trainer(
        load_config(
            None,
            tiny_overrides(
                tiny_manifest,
                tmp_path / "map",
                tmp_path / "cache",
                val_gallery="val",
                select_metric="macro_map",
            ),
        ),
        progress=False,
    )
    assert by_map.validate()[1]["counts"]["gallery"] == sizes["train"]
