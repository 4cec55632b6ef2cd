"""Load test of the service over loopback: latency, throughput, overhead, and a reindex
under load.

    python bench/load.py [--checkpoint runs/ablation/full/best.safetensors
                          | --variant small --depth 12 --size 224]
                         [--data ../shared/data/ham10000] [--clients 16] [--seconds 30]

1. Builds (or reuses) a collection of every image in ``--data`` (5,105 HAM10000 images)
   with ``--checkpoint``, or with a freshly initialised model (default the CPU recipe's
   size: tiny, 4 blocks, 96 px; speed does not depend on the weights).
2. Starts ``medret serve`` in its own process on 127.0.0.1.
3. Overhead: one client, ``--single`` rounds; each round times one ``POST /query`` and
   the bare in-process decode + embed + search of the same image (same code, no HTTP,
   no batcher), alternating so machine noise hits both. Prints the medians and their
   ratio (goal ≤ 1.25).
4. Load: ``--clients`` concurrent clients for ``--seconds`` s, cycling through 64 test
   images. Prints p50/p99 latency, requests/s and errors (goal: 0 errors).
5. Reindex under load: the same load while ``POST /admin/reindex`` (full) rebuilds the
   collection; runs until the job has finished and the new version serves. Prints failed
   queries (goal 0) and the versions seen.

Everything stays on loopback and is bounded in time (``--max-reindex-s``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from app.metrics import ServiceMetrics
from app.runner import ModelRunner
from app.settings import load_settings
from imaging.decode import decode_image
from imaging.preprocessing import PreprocessConfig
from indexer.builder import IndexBuilder, IndexerConfig
from indexer.search import CollectionIndex
from indexer.store import MetadataStore
from indexer.vectors.index import set_search_threads
from labels import LabelSpace
from medret.demo_salt import demo_group_salt
from model.architectures import build_model
from model.checkpoint import (
    CheckpointMeta,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
)
from model.config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token-0123456789abcdef"
COLLECTION = "ham"


def fresh_checkpoint(path: Path, codes: list[str], variant: str, depth: int, size: int) -> Path:
    if path.exists():
        return path
    torch.manual_seed(0)
    cfg = ModelConfig.from_variant(
        variant, num_classes=len(codes), depth=depth, image_size=size, embed_dim=128
    )
    meta = CheckpointMeta(
        model=cfg,
        labels=LabelSpace.from_codes(codes),
        preprocessing=PreprocessConfig(image_size=(size, size)),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, build_model(cfg), meta)
    return path


def ensure_collection(url: str, data_dir: Path, checkpoint: Path, source: Path, salt: str) -> None:
    store = MetadataStore.open(url)
    try:
        names = {c.name: c for c in store.list_collections()}
        if COLLECTION in names:
            active = store.active_version(names[COLLECTION].id)
            if active is not None and active.checkpoint_sha256 == file_sha256(checkpoint):
                print(f"reusing {COLLECTION!r} v{active.version} ({active.vector_count} cases)")
                return
        started = time.perf_counter()
        cfg = IndexerConfig(data_dir=data_dir, group_salt=salt, workers=2, progress=True)
        builder = IndexBuilder(store, cfg)
        result = builder.build(COLLECTION, checkpoint, source)
        print(
            f"indexed {result.vector_count} cases in {time.perf_counter() - started:.0f} s "
            f"({len(result.failed)} unreadable)"
        )
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    work: Path, url: str, source_root: Path, salt: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "MEDRET_DATA_DIR": str(work / "data"),
        "MEDRET_DATABASE_URL": url,
        "MEDRET_PORT": str(port),
        "MEDRET_ADMIN_TOKEN": TOKEN,
        "MEDRET_ARCHIVE_ROOTS": str(source_root),
        "MEDRET_GROUP_SALT": salt,  # the reindex under load hashes with it
        "MEDRET_LOG_LEVEL": "WARNING",
    }
    log = (work / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "medret", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited; see {work / 'server.log'}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    sys.exit("the server was not ready within 300 s")


def test_images(source: Path, count: int) -> list[bytes]:
    rows = [r for r in csv.DictReader((source / "labels.csv").open()) if r["split"] == "test"]
    return [(source / r["file"]).read_bytes() for r in rows[:count]]


# ---------------------------------------------------------------------------- overhead


def overhead(base: str, url: str, checkpoint: Path, image: bytes, rounds: int) -> dict[str, float]:
    """Median single-client /query latency against the bare in-process path."""
    settings = load_settings(data_dir=Path("/nonexistent"), batch_max=1)
    runner = ModelRunner(
        load_checkpoint(checkpoint), torch.device("cpu"), settings, ServiceMetrics()
    )
    store = MetadataStore.open(url)
    index = CollectionIndex.load(store, COLLECTION)
    set_search_threads(settings.search_threads)  # as the service does
    torch.set_num_threads(settings.resolved_torch_threads)

    def bare() -> float:
        started = time.perf_counter()
        decoded = decode_image(image)
        prediction = runner.forward([runner.canvas(decoded.pixels)])[0]
        index.search(
            store, prediction.embedding[np.newaxis], checkpoint_sha256=runner.sha256, top_k=10
        )
        return time.perf_counter() - started

    # the lightest client (stdlib http.client, keep-alive, the multipart body built once),
    # so that the figure is the service's overhead rather than the client library's
    boundary = "medretbenchboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    parsed = httpx.URL(base)
    connection = http.client.HTTPConnection(parsed.host, parsed.port, timeout=30)

    def over_http() -> float:
        started = time.perf_counter()
        connection.request("POST", "/query", body=body, headers=headers)
        response = connection.getresponse()
        answer = json.loads(response.read())
        elapsed = time.perf_counter() - started
        if response.status != 200 or not answer["cases"]:
            raise RuntimeError(f"/query answered {response.status}: {answer}")
        return elapsed

    http_times, bare_times = [], []
    for _ in range(5):  # warm both paths
        bare()
        over_http()
    for _ in range(rounds):
        http_times.append(over_http())
        bare_times.append(bare())
    connection.close()
    store.close()
    http_p50, bare_p50 = statistics.median(http_times), statistics.median(bare_times)
    return {
        "http_p50_ms": http_p50 * 1e3,
        "bare_p50_ms": bare_p50 * 1e3,
        "ratio": http_p50 / bare_p50,
        "rounds": rounds,
    }


# ---------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)
    went_back: int = 0  # a client saw an older version after a newer one
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        lat = np.asarray(self.latencies) * 1e3
        return {
            "requests": len(self.latencies) + len(self.errors),
            "errors": len(self.errors),
            "error_examples": self.errors[:3],
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "requests_per_s": len(self.latencies) / self.seconds if self.seconds else 0.0,
            "versions_seen": dict(sorted(self.versions.items())),
            "clients_seeing_an_older_version_again": self.went_back,
        }


async def run_load(
    base: str, images: list[bytes], clients: int, until: asyncio.Event, result: LoadResult
) -> None:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def client(n: int) -> None:
            newest = 0
            i = n
            while not until.is_set():
                image = images[i % len(images)]
                i += clients
                started = time.perf_counter()
                try:
                    response = await http.post("/query", files={"file": ("q.jpg", image)})
                except httpx.HTTPError as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    result.errors.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                result.latencies.append(elapsed)
                version = int(response.json()["index"]["version"])
                result.versions[version] = result.versions.get(version, 0) + 1
                if version < newest:
                    result.went_back += 1
                newest = max(newest, version)

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        result.seconds = time.perf_counter() - started


async def timed_load(base: str, images: list[bytes], clients: int, seconds: float) -> LoadResult:
    result = LoadResult()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await run_load(base, images, clients, stop, result)
    return result


async def load_with_reindex(
    base: str, images: list[bytes], clients: int, source: Path, max_s: float
) -> tuple[LoadResult, dict[str, object]]:
    result = LoadResult()
    stop = asyncio.Event()
    job: dict[str, object] = {}

    async def reindex() -> None:
        nonlocal job
        await asyncio.sleep(2)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, timeout=30, headers=headers) as admin:
            started = time.perf_counter()
            response = await admin.post(
                "/admin/reindex", json={"collection": COLLECTION, "source": str(source)}
            )
            response.raise_for_status()
            job = response.json()
            while time.perf_counter() - started < max_s:
                await asyncio.sleep(1)
                job = (await admin.get(f"/admin/jobs/{job['job_id']}")).json()
                if job["state"] in ("succeeded", "failed"):
                    break
            job["seconds"] = time.perf_counter() - started
            # the watcher loads the new version (and calibrates its out-of-distribution
            # check); keep querying until it serves, then a few seconds more
            counts = job.get("counts")
            wanted = counts.get("version") if isinstance(counts, dict) else None
            while wanted is not None and time.perf_counter() - started < max_s:
                ready = (await admin.get("/readyz")).json()
                if ready["collections"].get(COLLECTION, {}).get("version") == wanted:
                    job["served_after_s"] = time.perf_counter() - started
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(3)
        stop.set()

    await asyncio.gather(run_load(base, images, clients, stop, result), reindex())
    return result, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/ham10000")
    parser.add_argument("--checkpoint", type=Path, help="default: a fresh CPU-recipe-sized model")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-load")
    parser.add_argument("--variant", default="tiny", help="fresh model: size variant")
    parser.add_argument("--depth", type=int, default=4, help="fresh model: blocks")
    parser.add_argument("--size", type=int, default=96, help="fresh model: input side, px")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--single", type=int, default=200, help="overhead rounds")
    parser.add_argument("--max-reindex-s", type=float, default=900)
    parser.add_argument("--no-reindex", action="store_true")
    args = parser.parse_args()

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = args.data.resolve()
    codes = sorted({r["label"] for r in csv.DictReader((source / "labels.csv").open())})
    fresh = work / f"fresh-{args.variant}-{args.depth}-{args.size}.safetensors"
    checkpoint = (
        args.checkpoint or fresh_checkpoint(fresh, codes, args.variant, args.depth, args.size)
    ).resolve()
    url = f"sqlite:///{work / 'medret.db'}"
    salt = demo_group_salt(work)  # MEDRET_GROUP_SALT, else one kept in the work folder
    ensure_collection(url, work / "data", checkpoint, source, salt)
    server, base = start_server(work, url, source.parent, salt)
    report: dict[str, object] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}",
        "checkpoint": str(checkpoint),
        "clients": args.clients,
    }
    try:
        images = test_images(source, 64)
        report["overhead"] = overhead(base, url, checkpoint, images[0], args.single)
        print("single client:", json.dumps(report["overhead"]))
        loaded = asyncio.run(timed_load(base, images, args.clients, args.seconds))
        report["load"] = loaded.summary()
        print(f"{args.clients} clients × {args.seconds:.0f} s:", json.dumps(report["load"]))
        if not args.no_reindex:
            during, job = asyncio.run(
                load_with_reindex(base, images, args.clients, source, args.max_reindex_s)
            )
            report["reindex_under_load"] = {
                **during.summary(),
                "job_state": job.get("state"),
                "job_seconds": job.get("seconds"),
                "job_counts": job.get("counts"),
                "new_version_served_after_s": job.get("served_after_s"),
            }
            print("reindex under load:", json.dumps(report["reindex_under_load"]))
    finally:
        server.terminate()
        server.wait(30)
    (work / "load.json").write_text(json.dumps(report, indent=2))
    ov = report["overhead"]
    assert isinstance(ov, dict)
    print(
        f"\n/query p50 {ov['http_p50_ms']:.1f} ms vs bare decode+embed+search "
        f"{ov['bare_p50_ms']:.1f} ms: ratio {ov['ratio']:.2f} (goal ≤ 1.25)"
    )


if __name__ == "__main__":
    main()
