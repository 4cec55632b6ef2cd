"""Indexing from a PACS over DICOMweb against indexing the same files from disk.

    python bench/pacs_ingest.py [--limit 546] [--rounds 3] [--variant tiny --depth 4 --size 96]
                                [--workers 2] [--follow 10]

The real ChestX-ray14 images of ``../shared/data/chestxray14`` become Secondary Capture
DICOM instances (8-bit MONOCHROME2, 256²). They are written to a folder and stored into a
real Orthanc with its DICOMweb plugin (started here on 127.0.0.1, as the tests start it,
``scripts/ensure_orthanc.sh`` installs it) with STOW-RS. Each round then makes one full
index version of each, alternating: ``IndexBuilder.build`` from the folder and from
``dicomweb+http://127.0.0.1:…/dicom-web`` (QIDO-RS listing, WADO-RS retrieval in the
decoding workers, the same decode → embed → FAISS → SQL path). The script prints the
median instances per second of each and their ratio (goal ≥ 0.8 on loopback).

With ``--follow N`` it then starts ``medret follow`` on the PACS collection and stores N
single instances one by one, timing each from the moment STOW-RS returns to the moment
the instance is a case of the active index version (what the service searches after its
next reload, ``MEDRET_RELOAD_INTERVAL_S`` later at most); it prints p50 and p95 (goal ≤
10 s, ``MEDRET_RELOAD_INTERVAL_S`` included).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # the project's packages first,
sys.path.append(str(REPO / "tests"))  # then the PACS and DICOM builders of the tests

from imaging.preprocessing import PreprocessConfig  # noqa: E402
from indexer.builder import IndexBuilder, IndexerConfig  # noqa: E402
from indexer.group_keys import generate_group_salt  # noqa: E402
from indexer.store import MetadataStore  # noqa: E402
from labels import LabelSpace  # noqa: E402
from model.architectures import build_model  # noqa: E402
from model.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from support.dicom import make_dataset, to_bytes  # noqa: E402
from support.orthanc import Orthanc, require_orthanc  # noqa: E402
from support.pacs_instances import make_instances, uids_of  # noqa: E402

CHEST = REPO.parent / "shared" / "data" / "chestxray14" / "images"


def chest_instances(limit: int) -> list[bytes]:
    """The first ``limit`` real chest X-rays as DICOM Part 10 bytes (one study each)."""
    instances = []
    for path in sorted(CHEST.glob("*.png"))[:limit]:
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
        ds = make_dataset(
            pixels,
            Modality="CR",
            BodyPartExamined="CHEST",
            StudyInstanceUID=generate_uid(),
            SeriesInstanceUID=generate_uid(),
        )
        instances.append(to_bytes(ds))
    return instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=546, help="instances (≤ 546)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--follow", type=int, default=10, help="single instances to follow")
    args = parser.parse_args()
    require_orthanc()

    cfg = ModelConfig.from_variant(
        args.variant, num_classes=14, depth=args.depth, image_size=args.size
    )
    torch.manual_seed(0)
    instances = chest_instances(args.limit)
    with tempfile.TemporaryDirectory() as tmp_name, Orthanc(Path(tmp_name) / "orthanc") as pacs:
        tmp = Path(tmp_name)
        folder = tmp / "files"
        folder.mkdir()
        for i, data in enumerate(instances):
            (folder / f"{i:04d}.dcm").write_bytes(data)
        started = time.perf_counter()
        pacs.stow(instances)
        stow_s = time.perf_counter() - started
        meta = CheckpointMeta(
            model=cfg,
            labels=LabelSpace.from_codes(tuple(f"f{i}" for i in range(14))),
            preprocessing=PreprocessConfig(image_size=(args.size, args.size)),
        )
        ckpt = tmp / "model.safetensors"
        save_checkpoint(ckpt, build_model(cfg).eval(), meta)
        salt = generate_group_salt()
        store = MetadataStore.open(f"sqlite:///{tmp}/medret.db")
        builder = IndexBuilder(
            store,
            IndexerConfig(
                data_dir=tmp / "data",
                group_salt=salt,
                batch_size=args.batch,
                workers=args.workers,
                progress=False,
            ),
        )
        rates: dict[str, list[float]] = {"disk": [], "dicomweb": []}
        sources = {"disk": folder, "dicomweb": pacs.source}
        for round_ in range(args.rounds + 1):  # the first round warms up
            for name, source in sources.items():
                start = time.perf_counter()
                result = builder.build(f"{name}{round_}", ckpt, source)
                seconds = time.perf_counter() - start
                assert result.added == len(instances), result.to_dict()
                if round_:
                    rates[name].append(len(instances) / seconds)
        disk, web = statistics.median(rates["disk"]), statistics.median(rates["dicomweb"])
        print(
            f"{len(instances)} real chest X-rays (256² 8-bit CR), {cfg.variant} depth "
            f"{cfg.depth} @ {args.size}px, batch {args.batch}, {args.workers} decoding workers, "
            f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}; STOW-RS of all: {stow_s:.1f} s"
        )
        print("| source | full index, instances/s (median) |\n|---|---:|")
        print(f"| folder on disk | {disk:.1f} |")
        print(f"| DICOMweb (Orthanc, loopback) | {web:.1f} |")
        print(f"ratio DICOMweb / disk: {web / disk:.3f} (goal >= 0.8)")
        if args.follow:
            follow_delays(store, tmp, ckpt, salt, pacs, args.follow)
        store.close()


def follow_delays(
    store: MetadataStore, tmp: Path, ckpt: Path, salt: str, pacs: Orthanc, count: int
) -> None:
    """p50/p95 seconds from STOW-RS to a case of the active version, with ``medret follow``."""
    collection = "dicomweb1"  # indexed above: the follower starts from what is there
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    env.update({"MEDRET_GROUP_SALT": salt, "TQDM_DISABLE": "1"})
    command = [
        sys.executable, "-m", "medret", "follow", "--collection", collection,
        "--source", pacs.source, "--checkpoint", str(ckpt), "--data-dir", str(tmp / "data"),
        "--db", f"sqlite:///{tmp}/medret.db",
    ]  # fmt: skip
    log = (tmp / "follow.log").open("wb")
    follower = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    coll = store.get_collection(collection)
    delays = []
    try:
        time.sleep(8.0)  # the follower imports torch and catches up first
        for i, data in enumerate(make_instances(count, seed=4242, size=256)):
            sop = uids_of(data)[2]
            pacs.stow([data])
            stored = time.perf_counter()
            while not store.find_case_ids(coll.id, external_ids=[sop]):
                if follower.poll() is not None or time.perf_counter() - stored > 60:
                    raise SystemExit(f"instance {i} not indexed; see {tmp / 'follow.log'}")
                time.sleep(0.02)
            delays.append(time.perf_counter() - stored)
            time.sleep(0.5)
    finally:
        follower.terminate()
        follower.wait(30)
        log.close()
    p50 = statistics.median(delays)
    p95 = float(np.percentile(delays, 95))
    print(
        f"follow delay, STOW-RS → case of the active version, {count} single instances: "
        f"p50 {p50:.2f} s, p95 {p95:.2f} s (+ up to MEDRET_RELOAD_INTERVAL_S, default 2 s, "
        "until the service searches it; goal <= 10 s)"
    )


if __name__ == "__main__":
    main()
