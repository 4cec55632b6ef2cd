"""Builders for the service tests: a checkpoint, a HAM10000 subset, a live server.

(This folder is on ``sys.path`` while its tests run, so tests import it by name.)
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import torch

from app.settings import Settings
from indexer.builder import IndexBuilder, IndexerConfig
from indexer.store import MetadataStore
from model.checkpoint import CheckpointMeta, LabelSpace, save_checkpoint
from model.config import ModelConfig
from model.preprocessing import PreprocessConfig
from model.vit import build_model

REPO_ROOT = Path(__file__).resolve().parents[2]
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
HAM_CODES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
HAM_NAMES = {
    "MEL": "Melanoma",
    "NV": "Melanocytic nevus",
    "BCC": "Basal cell carcinoma",
    "AKIEC": "Actinic keratosis / intraepithelial carcinoma",
    "BKL": "Benign keratosis",
    "DF": "Dermatofibroma",
    "VASC": "Vascular lesion",
}
ADMIN_TOKEN = "test-admin-token-0123456789"


def make_checkpoint(
    path: Path,
    codes: tuple[str, ...],
    *,
    size: int = 64,
    seed: int = 0,
    task: str = "single_label",
    names: dict[str, str] | None = None,
) -> Path:
    """A freshly initialised small checkpoint (1 block, 32-d embedding)."""
    torch.manual_seed(seed)
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=len(codes), depth=1, image_size=size, embed_dim=32, task=task
    )
    meta = CheckpointMeta(
        model=cfg,
        labels=LabelSpace.from_codes(codes, names),
        preprocessing=PreprocessConfig(image_size=(size, size)),
    )
    save_checkpoint(path, build_model(cfg), meta)
    return path


def build_collection(
    url: str, data_dir: Path, name: str, checkpoint: Path, source: Path, layout: str = "auto"
) -> None:
    """Index ``source`` into collection ``name`` with the real indexer."""
    store = MetadataStore.open(url)
    try:
        builder = IndexBuilder(
            store, IndexerConfig(data_dir=data_dir, workers=0, progress=False, batch_size=32)
        )
        builder.build(name, checkpoint, source, layout=layout)
    finally:
        store.close()


def ham_subset(shared: Path, dest: Path, per_class: int) -> Path:
    """A manifest archive with up to ``per_class`` images of each HAM10000 class."""
    source = shared / "ham10000"
    rows = list(csv.DictReader((source / "labels.csv").open()))
    taken: dict[str, int] = {}
    kept = []
    for row in rows:
        if taken.get(row["label"], 0) < per_class:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            kept.append(row)
    (dest / "images").mkdir(parents=True)  # the manifest names files as images/<name>
    for row in kept:
        shutil.copy(source / row["file"], dest / row["file"])
    with (dest / "labels.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return dest


@dataclass(frozen=True)
class ServiceEnv:
    data_dir: Path
    database_url: str
    checkpoint: Path
    archive: Path
    archive_root: Path

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": self.data_dir,
            "database_url": self.database_url,
            "admin_token": ADMIN_TOKEN,
            "archive_roots": [str(self.archive_root)],
            "reload_interval_s": 0.2,
            "index_workers": 0,
            **overrides,
        }
        return Settings(**values)  # type: ignore[arg-type]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: ServiceEnv, log_path: Path, **extra_env: str) -> LiveServer:
    """``medret serve`` in a real uvicorn process, once /readyz answers 200."""
    variables = {
        "MEDRET_DATA_DIR": str(env.data_dir),
        "MEDRET_DATABASE_URL": env.database_url,
        "MEDRET_ADMIN_TOKEN": ADMIN_TOKEN,
        "MEDRET_ARCHIVE_ROOTS": str(env.archive_root),
        "MEDRET_RELOAD_INTERVAL_S": "0.3",
        "MEDRET_INDEX_WORKERS": "0",
        **extra_env,
    }
    return launch_server(variables, log_path, ready_path="/readyz")


def launch_server(variables: dict[str, str], log_path: Path, *, ready_path: str) -> LiveServer:
    """``medret serve`` with these MEDRET_* variables (on a free port), once ``ready_path``
    answers 200; MEDRET_* variables of the test process itself are not passed on."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    with log_path.open("w") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "medret", "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**inherited, **variables, "MEDRET_PORT": str(port)},
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"medret serve exited with {process.returncode}: {log_path.read_text()}"
            )
        try:
            if httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                return LiveServer(url, process, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"medret serve was not ready within 60 s: {log_path.read_text()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def dicom_bytes(
    pixels: np.ndarray, *, sop_class: str = SECONDARY_CAPTURE, **attributes: object
) -> bytes:
    """A monochrome 12-bit DICOM Part 10 file holding ``pixels`` (2-D, stored as uint16);
    ``attributes`` (e.g. ``Modality="CT"``, ``RescaleIntercept=-1024``) are set last."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.set_pixel_data(pixels.astype(np.uint16), "MONOCHROME2", 12)
    for key, value in attributes.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def chest_subset(shared: Path, dest: Path, count: int) -> Path:
    """The NIH ChestX-ray14 layout with only the first ``count`` images present."""
    source = shared / "chestxray14"
    (dest / "images").mkdir(parents=True)
    for path in sorted((source / "images").iterdir())[:count]:
        shutil.copy(path, dest / "images" / path.name)
    for name in ("Data_Entry_2017.csv", "train_val_list.txt", "test_list.txt"):
        shutil.copy(source / name, dest / name)
    return dest
