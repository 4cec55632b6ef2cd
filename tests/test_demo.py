"""``medret demo``: the synthetic set, and the command run as a user would (a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from archives.registry import read_archive
from indexer.group_keys import group_salt_fingerprint
from indexer.store import MetadataStore
from medret import demo_data
from medret.demo_data import CLASSES, DemoDataSpec, generate, is_complete, render
from model.checkpoint import file_sha256

SHAPES = {s: [c for c in CLASSES if c.startswith(f"{s}-")] for s in demo_data.SHAPES}
TEXTURES = {t: [c for c in CLASSES if c.endswith(f"-{t}")] for t in demo_data.TEXTURES}


# --------------------------------------------------------------------------- the data


def test_generated_set_is_deterministic_and_reads_as_a_manifest(tmp_path: Path) -> None:
    spec = DemoDataSpec(images_per_class=10)
    first = generate(tmp_path / "a", spec)
    second = generate(tmp_path / "b", spec)
    labels = (first / "labels.csv").read_bytes()
    assert labels == (second / "labels.csv").read_bytes()
    for name in ("disc-hatched_0000.png", "ring-smooth_0009.png", "cluster-hatched_0004.png"):
        assert (first / "images" / name).read_bytes() == (second / "images" / name).read_bytes()
    other_seed = generate(tmp_path / "c", DemoDataSpec(images_per_class=10, seed=1))
    assert (other_seed / "images" / "disc-hatched_0000.png").read_bytes() != (
        first / "images" / "disc-hatched_0000.png"
    ).read_bytes()

    archive = read_archive(first, "auto")
    assert archive.layout == "manifest"
    assert archive.task.value == "single_label"
    assert set(archive.codes) == set(CLASSES)
    assert len(archive.samples) == 10 * len(CLASSES)
    for code in CLASSES:
        splits = [s.split for s in archive.samples if s.labels == (code,)]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (7, 2, 1)
    sample = next(s for s in archive.samples if s.key == "ring-hatched_0003.png")
    assert dict(sample.metadata) == {}  # not clinical columns: not on the metadata allowlist
    assert archive.dropped_columns == ("shape", "texture")


def test_an_incomplete_or_different_set_is_not_taken_for_complete(tmp_path: Path) -> None:
    spec = DemoDataSpec(images_per_class=8)
    root = generate(tmp_path / "set", spec)
    assert is_complete(root, spec)
    assert not is_complete(root, DemoDataSpec(images_per_class=9))
    (root / demo_data.MARKER_FILE).unlink()  # as if generation had been interrupted
    assert not is_complete(root, spec)
    with pytest.raises(ValueError, match="at least 8"):
        DemoDataSpec(images_per_class=7)


def _downscale(images: np.ndarray, factor: int) -> np.ndarray:
    """(N, H, W) → (N, H/f, W/f) block means, as the model's pyramid averages."""
    n, h, w = images.shape
    return images.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def _high_frequency_energy(images: np.ndarray) -> np.ndarray:
    """Per image: mean squared difference from its own 2×2 block means."""
    blocks = np.repeat(np.repeat(_downscale(images, 2), 2, axis=1), 2, axis=2)
    return ((images - blocks) ** 2).mean(axis=(1, 2))


def _nearest_centroid_accuracy(
    features: dict[str, np.ndarray], groups: dict[str, list[str]]
) -> float:
    """Fit centroids on the first half of each class, score the second half."""
    half = len(next(iter(features.values()))) // 2
    centroids = {
        g: np.concatenate([features[c][:half] for c in classes]).mean(axis=0)
        for g, classes in groups.items()
    }
    names = list(centroids)
    stacked = np.stack([centroids[g] for g in names])
    correct = total = 0
    for g, classes in groups.items():
        for c in classes:
            distances = ((features[c][half:, None, :] - stacked[None]) ** 2).sum(axis=2)
            correct += int((np.asarray(names)[distances.argmin(axis=1)] == g).sum())
            total += len(distances)
    return correct / total


def _best_threshold_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    values = np.concatenate([a, b])
    is_b = np.concatenate([np.zeros(len(a), bool), np.ones(len(b), bool)])
    best = 0.0
    for t in values:
        accuracy = ((values >= t) == is_b).mean()
        best = max(best, accuracy, 1 - accuracy)
    return float(best)


def test_shape_shows_at_coarse_scale_and_texture_only_at_fine_scale() -> None:
    n = 40
    gray = {
        c: np.stack([render(c, 0, i, 96).astype(np.float32).mean(axis=2) / 255 for i in range(n)])
        for c in CLASSES
    }
    coarse = {c: _downscale(images, 8).reshape(n, -1) for c, images in gray.items()}  # 12×12
    # coarse: the shape is there, the texture is not (chance is 1/3 and 1/2)
    assert _nearest_centroid_accuracy(coarse, SHAPES) > 0.7
    assert _nearest_centroid_accuracy(coarse, TEXTURES) < 0.6
    # fine: a texture statistic separates hatched from smooth at full resolution only
    smooth = np.concatenate([gray[c] for c in TEXTURES["smooth"]])
    hatched = np.concatenate([gray[c] for c in TEXTURES["hatched"]])
    fine = _best_threshold_accuracy(_high_frequency_energy(smooth), _high_frequency_energy(hatched))
    downscaled = _best_threshold_accuracy(
        _high_frequency_energy(_downscale(smooth, 4)),
        _high_frequency_energy(_downscale(hatched, 4)),
    )
    assert fine > 0.97
    assert downscaled < 0.8


# --------------------------------------------------------------------------- the command


def medret(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    exe = shutil.which("medret")
    cmd = [exe] if exe else [sys.executable, "-m", "medret"]
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "MEDRET_GROUP_SALT"}  # its own salt
    result = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=240, check=False, cwd=cwd, env=env
    )
    return result, time.perf_counter() - started


def _salt_fingerprint(data_dir: Path, collection: str) -> str | None:
    store = MetadataStore.open(f"sqlite:///{data_dir / 'medret.db'}")
    try:
        return store.get_collection(collection).group_salt_fingerprint
    finally:
        store.close()


def _active(data_dir: Path, collection: str) -> tuple[int, str, int]:
    store = MetadataStore.open(f"sqlite:///{data_dir / 'medret.db'}")
    try:
        coll = store.get_collection(collection)
        active = store.active_version(coll.id)
        assert active is not None
        return active.version, active.checkpoint_sha256, store.count_cases(coll.id)
    finally:
        store.close()


@pytest.mark.slow
def test_demo_builds_then_reuses_then_rebuilds_what_changed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    small = ["demo", "--no-serve", "--data-dir", str(data_dir), "--images-per-class", "8"]

    first, first_s = medret(*small, "--epochs", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "generating 48 synthetic images" in first.stdout
    assert "model: the CPU recipe on " in first.stdout
    assert "vit (3 phases × 1 epochs" in first.stdout
    assert "version 1 is active with 48 cases" in first.stdout
    assert "medret serve --data-dir" in first.stdout  # --no-serve says how to serve it
    checkpoint = data_dir / "demo" / "run" / "best.safetensors"
    sha, mtime = file_sha256(checkpoint), checkpoint.stat().st_mtime_ns
    assert _active(data_dir, "demo") == (1, sha, 48)
    marker = json.loads((data_dir / "demo" / "run" / "demo-run.json").read_text())
    assert marker["checkpoint_sha256"] == {"model": sha}
    salt_file = data_dir / "demo" / "group-salt"  # the demo's own salt, private
    salt = salt_file.read_text().strip()
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert _salt_fingerprint(data_dir, "demo") == group_salt_fingerprint(salt)
    assert "MEDRET_GROUP_SALT=$(cat " in first.stdout  # how to give it to medret serve

    second, second_s = medret(*small, "--epochs", "1", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "data: reusing the synthetic set" in second.stdout
    assert "model: reusing" in second.stdout
    assert "index: reusing collection 'demo' version 1" in second.stdout
    assert "model: the CPU recipe" not in second.stdout
    assert "epoch 1/3" not in second.stderr  # no training progress bar at all
    assert (file_sha256(checkpoint), checkpoint.stat().st_mtime_ns) == (sha, mtime)
    assert _active(data_dir, "demo") == (1, sha, 48)
    assert second_s < first_s

    # a run folder marked before recipes (one flat config without today's newer keys, one
    # SHA-256) is the same run: reused, not deleted
    marker_path = data_dir / "demo" / "run" / "demo-run.json"
    marker = json.loads(marker_path.read_text())
    flat = marker["config"]["model"]
    for key in ("distill_targets", "geometry_temperature"):
        flat["loss"].pop(key)
    flat["phases"] = [{k: v for k, v in p.items() if k != "geometry"} for p in flat["phases"]]
    old_marker = {"dataset": marker["dataset"], "config": flat, "checkpoint_sha256": sha}
    marker_path.write_text(json.dumps(old_marker))
    older, _ = medret(*small, "--epochs", "1", cwd=tmp_path)
    assert older.returncode == 0, older.stderr[-3000:]
    assert "model: reusing" in older.stdout
    assert (file_sha256(checkpoint), checkpoint.stat().st_mtime_ns) == (sha, mtime)

    # another training config (two epochs per phase): retrained and re-indexed
    third, _ = medret(*small, "--epochs", "2", cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "data: reusing the synthetic set" in third.stdout
    assert "vit (3 phases × 2 epochs" in third.stdout
    new_sha = file_sha256(checkpoint)
    assert new_sha != sha
    assert _active(data_dir, "demo") == (2, new_sha, 48)
    assert salt_file.read_text().strip() == salt  # re-indexed with the same salt
    assert _salt_fingerprint(data_dir, "demo") == group_salt_fingerprint(salt)


@pytest.mark.slow
def test_demo_on_a_given_dataset_trains_and_indexes_it(tmp_path: Path) -> None:
    dataset = generate(tmp_path / "archive", DemoDataSpec(images_per_class=8, seed=3))
    data_dir = tmp_path / "data"
    args = ["demo", "--no-serve", "--data-dir", str(data_dir), "--data", str(dataset)]
    args += ["--collection", "mine", "--epochs", "1"]
    result, _ = medret(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generating" not in result.stdout
    assert "(manifest), 48 images, 6 classes" in result.stdout
    assert "CPU core" in result.stdout or "GPU" in result.stdout  # the time estimate
    # the quality recipe: the teacher, then the hybrid ViT started and distilled from it,
    # which is served
    assert "model: the quality recipe on " in result.stdout
    assert result.stdout.index("stage 1/2 teacher: training") < result.stdout.index(
        "stage 2/2 student: training"
    )
    run = data_dir / "demo" / "run-archive"
    assert "student = vit + efficientnet_lite0 stem (3 phases" in result.stdout
    assert f"serving stage 'student', {run / 'student' / 'best.safetensors'}" in result.stdout
    assert "heat maps" not in result.stdout  # the served ViT has them
    version, sha, cases = _active(data_dir, "mine")
    assert (version, sha, cases) == (1, file_sha256(run / "student" / "best.safetensors"), 48)

    # the other model on request: nothing retrained, the collection re-indexed with it
    teacher, _ = medret(*args, "--stage", "teacher", cwd=tmp_path)
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    assert "model: reusing" in teacher.stdout
    assert "training into" not in teacher.stdout
    assert "heat maps (/explain) need the ViT; --stage student serves the ViT" in teacher.stdout
    version, sha, _ = _active(data_dir, "mine")
    assert (version, sha) == (2, file_sha256(run / "teacher" / "best.safetensors"))

    # a lost teacher is trained again (deterministically: the same file), and the student
    # that learnt from it is kept
    teacher_sha = file_sha256(run / "teacher" / "best.safetensors")
    (run / "teacher" / "best.safetensors").unlink()
    again, _ = medret(*args, "--stage", "student", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stage 1/2 teacher: training" in again.stdout
    assert "stage 2/2 student: reusing" in again.stdout
    assert file_sha256(run / "teacher" / "best.safetensors") == teacher_sha
    # a student that learnt from another teacher than today's is trained again
    marker = json.loads((run / "demo-run.json").read_text())
    assert marker["teachers"] == {"student": teacher_sha}
    marker["teachers"]["student"] = "0" * 64
    (run / "demo-run.json").write_text(json.dumps(marker))
    other, _ = medret(*args, "--stage", "student", cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-3000:]
    assert "stage 1/2 teacher: reusing" in other.stdout
    assert "stage 2/2 student: training" in other.stdout

    unknown, _ = medret(*args, "--stage", "pupil", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "has no stage 'pupil' (it has teacher, student)" in unknown.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root, "matches no dataset layout"),
    ],
    ids=["missing", "not-a-dataset"],
)
def test_bad_data_fails_with_one_line(tmp_path: Path, make: object, message: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    path = make(empty)  # type: ignore[operator]
    result, _ = medret(
        "demo", "--no-serve", "--data-dir", str(tmp_path / "d"), "--data", str(path), cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("medret demo: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
