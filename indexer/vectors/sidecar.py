"""``index.json``: what an index is, how it came to be, and the hash of its ``index.faiss``.

The sidecar records the checkpoint that made the vectors, the dimension and metric, the
factory and search parameters asked for and built, the vector count, provenance (creation
time, build time, training sample, seed, FAISS version) and, added on save, the size and
SHA-256 of ``index.faiss`` so a truncated, corrupt or mismatched pair is refused on load.
Its JSON layout is part of the on-disk format (:data:`FORMAT_VERSION`). Format 2 adds
``scores.json`` (the centre the vectors were moved by and the match-probability table,
:mod:`indexer.vectors.space`, :mod:`indexer.calibration`) with its size and SHA-256;
a format-1 folder still loads, with no centre and no table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss

from indexer.vectors.errors import VectorIndexError
from indexer.vectors.factory import IndexSpec

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # 1: before scores.json (no centre, no match-probability table)
SIDECAR_FILE = "index.json"
METRIC_NAME = "inner_product"

REQUIRED_SIDECAR_KEYS = (
    "format_version",
    "checkpoint_sha256",
    "dim",
    "factory",
    "search_params",
    "vector_count",
    "index_bytes",
    "index_sha256",
)
SCORES_SIDECAR_KEYS = ("scores_file", "scores_bytes", "scores_sha256")  # format 2


@dataclass(frozen=True)
class Provenance:
    """How an index came to be; written to the sidecar."""

    checkpoint_sha256: str
    factory_requested: str
    search_params_requested: dict[str, int | float]
    fallback_reason: str | None
    created_at: str
    build_seconds: float
    train_vectors: int
    seed: int


def sidecar_record(spec: IndexSpec, provenance: Provenance, vector_count: int) -> dict[str, Any]:
    """What ``index.json`` records (without the index file's size and hash, added on save)."""
    p = provenance
    return {
        "format_version": FORMAT_VERSION,
        "checkpoint_sha256": p.checkpoint_sha256,
        "dim": spec.dim,
        "metric": METRIC_NAME,
        "factory": spec.factory,
        "search_params": dict(spec.search_params),
        "factory_requested": p.factory_requested,
        "search_params_requested": dict(p.search_params_requested),
        "fallback_reason": p.fallback_reason,
        "vector_count": vector_count,
        "created_at": p.created_at,
        "build_seconds": p.build_seconds,
        "train_vectors": p.train_vectors,
        "seed": p.seed,
        "faiss_version": faiss.__version__,
    }


def sidecar_json(sidecar: Mapping[str, Any]) -> str:
    """The sidecar as written to ``index.json``: indented, keys sorted, a final newline."""
    return json.dumps(sidecar, indent=2, sort_keys=True) + "\n"


def spec_from_sidecar(sidecar: Mapping[str, Any]) -> IndexSpec:
    """The index built and the search parameters in force, as recorded."""
    return IndexSpec(str(sidecar["factory"]), int(sidecar["dim"]), dict(sidecar["search_params"]))


def provenance_from_sidecar(sidecar: Mapping[str, Any]) -> Provenance:
    """The provenance recorded (defaults for keys that older sidecars may lack)."""
    factory = str(sidecar["factory"])
    return Provenance(
        checkpoint_sha256=str(sidecar["checkpoint_sha256"]),
        factory_requested=str(sidecar.get("factory_requested", factory)),
        search_params_requested=dict(sidecar.get("search_params_requested", {})),
        fallback_reason=sidecar.get("fallback_reason"),
        created_at=str(sidecar.get("created_at", "")),
        build_seconds=float(sidecar.get("build_seconds", 0.0)),
        train_vectors=int(sidecar.get("train_vectors", 0)),
        seed=int(sidecar.get("seed", 0)),
    )


def read_sidecar(folder: Path) -> dict[str, Any]:
    """``folder/index.json``, checked for the keys, format version and metric this code reads."""
    path = folder / SIDECAR_FILE
    if not path.is_file():
        raise VectorIndexError(f"no index in {folder}: {SIDECAR_FILE} is missing")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VectorIndexError(f"{path} is not readable JSON: {err}") from err
    if not isinstance(sidecar, dict):
        raise VectorIndexError(f"{path} is not a JSON object")
    missing = [key for key in REQUIRED_SIDECAR_KEYS if key not in sidecar]
    if missing:
        raise VectorIndexError(f"{path} lacks {', '.join(missing)}")
    if sidecar["format_version"] not in READABLE_FORMATS:
        raise VectorIndexError(
            f"{path} has format version {sidecar['format_version']}, this code reads "
            f"{' and '.join(map(str, READABLE_FORMATS))}; rebuild the index"
        )
    scored = sidecar["format_version"] >= 2
    missing = [key for key in SCORES_SIDECAR_KEYS if scored and key not in sidecar]
    if missing:
        raise VectorIndexError(f"{path} lacks {', '.join(missing)}")
    if sidecar.get("metric", METRIC_NAME) != METRIC_NAME:
        raise VectorIndexError(f"{path}: metric {sidecar['metric']!r}, expected {METRIC_NAME}")
    return sidecar
