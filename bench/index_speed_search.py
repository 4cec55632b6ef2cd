"""Search speed, recall and memory of the default large-archive FAISS index (issue 4, part b).

    python bench/index_speed_search.py [--n 1000000] [--dim 256] [--queries 1000] [--seed 0]
    python bench/index_speed_search.py --n 20000 --choose-for-n 1000000   # quick check

Builds ``VectorIndex`` with ``choose_factory(n, dim)`` (for 1,000,000 × 256: ``HNSW32,Flat``)
on synthetic embeddings and prints Markdown tables: build time, memory per vector (index
file size / n and the process's resident-memory growth / n), single-query latency p50/p99
(one query per ``VectorIndex.search`` call, as the service issues them) and recall@10
against exact search (``faiss.IndexFlatIP`` on the same vectors), then a sweep of efSearch
(or nprobe) showing what the default trades. Goal: p50 ≤ 5 ms at recall@10 ≥ 0.95 on 2 CPU
cores.

Synthetic data. Real image embeddings are neither uniform on the sphere nor single points
per class: they form many clusters (classes, lesion types, acquisition sites) of unequal
size, and the variation inside a cluster spans few directions (learned embeddings have an
intrinsic dimension of tens, not hundreds). So each vector is

    normalise(centre_c + B_c z + σ ε)

with ``n / 500`` clusters (2,000 for 1M; sizes log-normal, σ = 1), centres uniform on the
sphere, ``B_c`` a random orthonormal basis of 16 directions per cluster with variances
∝ 1/i summing to 0.6, and isotropic noise of total variance 0.3 (σ² = 0.3 / dim). The cosine
of a point to its centre is then ≈ 0.73 (spread like a trained retrieval model's classes),
and neighbours are found within and across clusters. Queries are fresh draws from the same
mixture (new images of known kinds), not stored vectors. ``--uniform`` adds a row for
uniformly random unit vectors, the unrealistically hard case with no structure to exploit
(it builds a second index: at 1M that doubles the run time).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from indexer.vectors.factory import IndexSpec, choose_factory, hnsw_bytes_per_vector
from indexer.vectors.index import VectorIndex
from indexer.vectors.persistence import INDEX_FILE

CHECKPOINT = "0" * 64  # synthetic vectors: no model
LOW_RANK = 16
LOW_RANK_VARIANCE = 0.6
ISOTROPIC_VARIANCE = 0.3
POINTS_PER_CLUSTER = 500
K = 10
P50_GOAL_MS = 5.0
RECALL_GOAL = 0.95
SWEEPS = {"efSearch": [32, 64, 128, 256, 512, 1024], "nprobe": [8, 16, 32, 64, 128, 256]}


def clustered_embeddings(n: int, dim: int, *, clusters: int, seed: int) -> npt.NDArray[np.float32]:
    """``n`` unit vectors from the cluster mixture described in the module docstring."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, clusters)
    labels = rng.choice(clusters, size=n, p=weights / weights.sum())
    scales = np.sqrt(LOW_RANK_VARIANCE / np.arange(1, LOW_RANK + 1))
    scales *= math.sqrt(LOW_RANK_VARIANCE / float((scales**2).sum()))
    sigma = math.sqrt(ISOTROPIC_VARIANCE / dim)
    out = np.empty((n, dim), dtype=np.float32)
    members = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[members], np.arange(clusters + 1))
    for c in tqdm(range(clusters), desc="generating", unit="cluster", leave=False, disable=None):
        rows = members[bounds[c] : bounds[c + 1]]
        if rows.size == 0:
            continue
        basis, _ = np.linalg.qr(rng.standard_normal((dim, LOW_RANK)))  # (dim, r) orthonormal
        z = rng.standard_normal((rows.size, LOW_RANK)) * scales
        noise = rng.standard_normal((rows.size, dim)) * sigma
        out[rows] = centres[c] + z @ basis.T + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def uniform_embeddings(n: int, dim: int, *, seed: int) -> npt.NDArray[np.float32]:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def exact_neighbours(
    vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32]
) -> npt.NDArray[np.int64]:
    """Row numbers of the exact top-K by inner product (``IndexFlatIP``, batched)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    _, rows = flat.search(queries, K)
    return np.asarray(rows, dtype=np.int64)


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc/self/statm``), after giving back free heap.

    ``malloc_trim`` returns memory that glibc keeps after ``free`` (at small scale, freed
    numpy temporaries would otherwise be reused by the index and hide its size).
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Timing:
    recall: float
    p50_ms: float
    p99_ms: float

    @property
    def meets_goal(self) -> bool:
        return self.p50_ms <= P50_GOAL_MS and self.recall >= RECALL_GOAL


def time_single_queries(
    index: VectorIndex, queries: npt.NDArray[np.float32], truth_ids: npt.NDArray[np.int64]
) -> Timing:
    """One query per ``search`` call after a warm-up; recall@K of those same answers."""
    for q in queries[: min(50, len(queries))]:
        index.search(q[None, :], K)
    latencies = np.empty(len(queries))
    found = np.empty((len(queries), K), dtype=np.int64)
    for i in tqdm(range(len(queries)), desc="queries", leave=False, disable=None):
        query = queries[i : i + 1]
        start = time.perf_counter()
        _, ids = index.search(query, K)
        latencies[i] = time.perf_counter() - start
        found[i] = ids[0]
    hits = [len(set(f) & set(t)) for f, t in zip(found, truth_ids, strict=True)]
    return Timing(
        recall=float(np.mean(hits)) / K,
        p50_ms=float(np.percentile(latencies, 50)) * 1e3,
        p99_ms=float(np.percentile(latencies, 99)) * 1e3,
    )


@dataclass(frozen=True)
class BuildReport:
    index: VectorIndex
    build_s: float
    file_bytes: int
    rss_delta: int


def build_and_measure(vectors: npt.NDArray[np.float32], spec: IndexSpec, seed: int) -> BuildReport:
    """Build with ids 0..n-1 (row = id), measuring time, resident memory and file size."""
    before = rss_bytes()
    start = time.perf_counter()
    index = VectorIndex.build(
        vectors,
        np.arange(len(vectors), dtype=np.int64),
        spec,
        checkpoint_sha256=CHECKPOINT,
        seed=seed,
    )
    build_s = time.perf_counter() - start
    rss_delta = rss_bytes() - before
    with tempfile.TemporaryDirectory(prefix="index_speed_") as folder:
        index.save(Path(folder))
        file_bytes = (Path(folder) / INDEX_FILE).stat().st_size
    return BuildReport(index, build_s, file_bytes, rss_delta)


def sweep_parameter(spec: IndexSpec) -> tuple[str, list[int]] | None:
    for name, values in SWEEPS.items():
        if name in spec.search_params:
            default = int(spec.search_params[name])
            return name, sorted({*values, default})
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000, help="single queries timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clusters", type=int, help="default: n / 500")
    parser.add_argument(
        "--choose-for-n",
        type=int,
        help="pick the factory as choose_factory would for this many vectors (default: --n); "
        "e.g. --n 20000 --choose-for-n 1000000 tries the large-archive index at small scale",
    )
    parser.add_argument("--budget-gib", type=float, default=8.0, help="choose_factory budget")
    parser.add_argument("--threads", type=int, help="FAISS threads (default: usable CPUs)")
    parser.add_argument("--uniform", action="store_true", help="add a uniform-random row")
    parser.add_argument("--no-sweep", action="store_true", help="skip the parameter sweep")
    args = parser.parse_args()
    if args.n < 1 or args.dim < 1 or args.queries < 1:
        parser.error("--n, --dim and --queries must be positive")
    clusters = args.clusters or max(1, args.n // POINTS_PER_CLUSTER)
    threads = args.threads or len(os.sched_getaffinity(0))
    faiss.omp_set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    spec = choose_factory(
        args.choose_for_n or args.n, args.dim, memory_budget_bytes=int(args.budget_gib * 2**30)
    )
    cpu = platform.processor() or platform.machine()
    print(
        f"n={args.n:,} dim={args.dim} queries={args.queries} clusters={clusters} "
        f"seed={args.seed}; factory {spec.factory} {dict(spec.search_params)}; "
        f"faiss {faiss.__version__}, {threads} threads, {cpu}",
        flush=True,
    )

    data = clustered_embeddings(args.n + args.queries, args.dim, clusters=clusters, seed=args.seed)
    vectors, queries = data[: args.n], data[args.n :].copy()
    del data
    report = build_and_measure(vectors, spec, args.seed)
    truth = exact_neighbours(vectors, queries)
    timing = time_single_queries(report.index, queries, truth)

    rows = [("clustered", report, timing)]
    sweep: list[tuple[int, Timing]] = []
    swept = None if args.no_sweep else sweep_parameter(report.index.spec)
    if swept is not None:
        name, values = swept
        for value in values:
            report.index.set_search_params({name: value})
            sweep.append((value, time_single_queries(report.index, queries, truth)))
        report.index.set_search_params(spec.search_params)
    del vectors

    if args.uniform:
        uniform = uniform_embeddings(args.n + args.queries, args.dim, seed=args.seed + 1)
        u_vectors, u_queries = uniform[: args.n], uniform[args.n :].copy()
        del uniform
        u_report = build_and_measure(u_vectors, spec, args.seed)
        u_truth = exact_neighbours(u_vectors, u_queries)
        rows.append(
            ("uniform random", u_report, time_single_queries(u_report.index, u_queries, u_truth))
        )

    print()
    print(
        "| data | factory | params | build s | file B/vector | RSS B/vector | "
        "p50 ms | p99 ms | recall@10 | goal |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for label, rep, tim in rows:
        print(
            f"| {label} | {rep.index.spec.factory} | {dict(rep.index.spec.search_params)} | "
            f"{rep.build_s:.1f} | {rep.file_bytes / args.n:,.0f} | {rep.rss_delta / args.n:,.0f} "
            f"| {tim.p50_ms:.3f} | {tim.p99_ms:.3f} | {tim.recall:.4f} | "
            f"{'met' if tim.meets_goal else 'missed'} |"
        )
    if spec.factory.startswith("HNSW"):
        print(f"\nestimated by choose_factory: {hnsw_bytes_per_vector(args.dim):,.0f} B/vector")
    if swept is not None:
        name, _ = swept
        default = int(spec.search_params[name])
        print(f"\n| {name} | recall@10 | p50 ms | p99 ms | goal |")
        print("|---:|---:|---:|---:|---|")
        for value, tim in sweep:
            mark = " (default)" if value == default else ""
            print(
                f"| {value}{mark} | {tim.recall:.4f} | {tim.p50_ms:.3f} | {tim.p99_ms:.3f} | "
                f"{'met' if tim.meets_goal else 'missed'} |"
            )
    goal = "met" if timing.meets_goal else "MISSED"
    print(
        f"\ngoal p50 ≤ {P50_GOAL_MS} ms at recall@10 ≥ {RECALL_GOAL}: {goal} "
        f"(p50 {timing.p50_ms:.3f} ms, recall@10 {timing.recall:.4f})"
    )


if __name__ == "__main__":
    main()
