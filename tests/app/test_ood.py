"""The out-of-distribution flag, with a really trained model: chest X-rays sent to a
dermoscopy collection are flagged, held-out dermoscopy images mostly are not."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ood import fit_ood
from support.checkpoints import make_checkpoint
from support.real_data import HAM_CODES, ham_subset
from support.service import ServiceEnv, build_collection

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_fit_uses_held_out_cases_for_the_threshold() -> None:
    rng = np.random.default_rng(0)
    inside = rng.normal(size=(600, 8))
    model = fit_ood(inside, false_alarm_rate=0.05)
    fresh = rng.normal(size=(2000, 8))  # new in-distribution samples
    flagged = np.mean([model.is_flagged(model.score(f)) for f in fresh])
    assert 0.01 < flagged < 0.12  # ≈ the asked-for 5 %
    far = rng.normal(loc=6.0, size=(100, 8))
    assert all(model.is_flagged(model.score(f)) for f in far)


def test_too_few_cases_never_flag() -> None:
    model = fit_ood(np.ones((5, 4)), false_alarm_rate=0.01)
    assert not model.is_flagged(model.score(np.full(4, 1e6)))


@pytest.mark.slow
def test_chest_xrays_are_flagged_on_a_dermoscopy_collection(
    tmp_path: Path, shared_data: Path
) -> None:
    archive = ham_subset(shared_data, tmp_path / "archives" / "ham", per_class=80)
    run = tmp_path / "run"
    trained = subprocess.run(
        [
            sys.executable, "-m", "medret", "train",
            "--config", str(REPO_ROOT / "configs" / "cpu_recipe.yaml"),
            "--data", str(archive), "--out", str(run), "--epochs-per-phase", "1",
            "--set", "model.depth=2", "--set", "model.image_size=64",
            "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--set", "tensorboard=false", "--set", "data.workers=0",
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    checkpoint = run / "best.safetensors"
    url = f"sqlite:///{tmp_path / 'medret.db'}"
    build_collection(url, tmp_path / "data", "derm", checkpoint, archive)
    env = ServiceEnv(tmp_path / "data", url, checkpoint, archive, tmp_path / "archives")

    indexed = {p.name for p in (archive / "images").iterdir()}
    rows = csv.DictReader((shared_data / "ham10000" / "labels.csv").open())
    held_out = [
        shared_data / "ham10000" / r["file"]
        for r in rows
        if r["split"] == "test" and Path(r["file"]).name not in indexed
    ][:60]
    xrays = sorted((shared_data / "chestxray14" / "images").iterdir())[:40]

    with TestClient(create_app(env.settings(ood_false_alarm_rate=0.05))) as client:

        def flagged(path: Path) -> bool:
            answer = client.post("/query", files={"file": ("q", path.read_bytes())})
            assert answer.status_code == 200, answer.text
            ood = answer.json()["out_of_distribution"]
            assert ood["threshold"] is not None
            return bool(ood["flagged"])

        xray_rate = np.mean([flagged(p) for p in xrays])
        derm_rate = np.mean([flagged(p) for p in held_out])
    assert xray_rate >= 0.95, f"only {xray_rate:.0%} of chest X-rays flagged"
    assert derm_rate <= 0.15, f"{derm_rate:.0%} of held-out dermoscopy images flagged"


def test_reference_features_are_reused_by_a_new_version(
    tmp_path: Path, shared_data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = ham_subset(shared_data, tmp_path / "archives" / "ham", per_class=3)
    checkpoint = make_checkpoint(tmp_path / "derm.safetensors", HAM_CODES, size=64)
    url = f"sqlite:///{tmp_path / 'medret.db'}"
    env = ServiceEnv(tmp_path / "data", url, checkpoint, archive, tmp_path / "archives")
    build_collection(url, env.data_dir, "derm", checkpoint, archive)
    caplog.set_level(logging.INFO, logger="app.calibration")
    with TestClient(create_app(env.settings())):
        pass
    assert "(21 encoded now" in caplog.text  # 7 classes × 3 images, all encoded once
    assert list((env.data_dir / "cache" / "ood").glob("features-*.npz"))
    caplog.clear()
    build_collection(url, env.data_dir, "derm", checkpoint, archive)  # a full reindex: v2
    with TestClient(create_app(env.settings())) as client:
        assert client.get("/readyz").json()["collections"]["derm"]["version"] == 2
    assert "derm v2: out-of-distribution threshold" in caplog.text
    assert "(0 encoded now" in caplog.text  # the same images: nothing decoded again
