"""Writes the artefacts of tests/compat/legacy_main/ with the code of commit cf91237.

Run from a checkout of that commit:  python compat/make_fixture.py OUT_DIR
It builds (under the fixed prefix /tmp/medret-legacy, which the test relocates):
a 12-image manifest archive, a tiny checkpoint, an index version in SQLite, a pixel cache,
and the answers of POST /query for three images.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

PREFIX = Path("/tmp/medret-legacy")
CODES = ("AAA", "BBB", "CCC")


def image(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    colours = {0: (200, 40, 40), 1: (40, 200, 40), 2: (40, 40, 200)}
    pixels = rng.integers(0, 60, (40, 48, 3), dtype=np.uint8)
    r0, c0 = rng.integers(0, 20), rng.integers(0, 24)
    pixels[r0 : r0 + 18, c0 : c0 + 20] = colours[i % 3]
    return pixels


def main() -> None:
    out = Path(sys.argv[1])
    shutil.rmtree(PREFIX, ignore_errors=True)
    archive = PREFIX / "archive"
    (archive / "images").mkdir(parents=True)
    rows = ["file,label,split"]
    for i in range(12):
        name = f"images/img{i:02d}.png"
        Image.fromarray(image(i)).save(archive / name)
        rows.append(f"{name},{CODES[i % 3]},{'test' if i >= 9 else 'train'}")
    (archive / "labels.csv").write_text("\n".join(rows) + "\n")

    from model.checkpoint import CheckpointMeta, LabelSpace, save_checkpoint
    from model.config import ModelConfig
    from model.preprocessing import PreprocessConfig
    from model.vit import build_model

    torch.manual_seed(0)
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=3, depth=1, image_size=32, embed_dim=16, width=48, heads=2
    )
    meta = CheckpointMeta(
        model=cfg,
        labels=LabelSpace.from_codes(CODES, None),
        preprocessing=PreprocessConfig(image_size=(32, 32)),
    )
    checkpoint = PREFIX / "checkpoint.safetensors"
    save_checkpoint(checkpoint, build_model(cfg), meta)

    from indexer.builder import IndexBuilder, IndexerConfig
    from indexer.store import MetadataStore

    data = PREFIX / "data"
    url = f"sqlite:///{data / 'medret.db'}"
    data.mkdir()
    store = MetadataStore.open(url)
    IndexBuilder(store, IndexerConfig(data_dir=data, workers=0, progress=False)).build(
        "legacy", checkpoint, archive
    )
    store.close()

    from model.archives import read_archive
    from training.pixel_cache import PixelCache

    samples = read_archive(archive).samples
    cache = PixelCache(PREFIX / "cache", (32, 32))
    rows_built, _ = cache.build(samples, workers=0, progress=False)

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(data_dir=data, database_url=url, reload_interval_s=60)
    answers = {}
    with TestClient(create_app(settings)) as client:
        for i in (0, 4, 11):
            with (archive / f"images/img{i:02d}.png").open("rb") as fh:
                response = client.post("/query?k=5", files={"file": ("q.png", fh, "image/png")})
            response.raise_for_status()
            body = response.json()
            answers[f"img{i:02d}.png"] = {
                "cases": [[c["case_id"], c["score"]] for c in body["cases"]],
                "predictions": [[p["code"], p["probability"]] for p in body["predictions"]],
            }
    (PREFIX / "expected.json").write_text(
        json.dumps({"cache_rows": rows_built.tolist(), "answers": answers}, indent=1) + "\n"
    )
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(PREFIX, out)


if __name__ == "__main__":
    main()
