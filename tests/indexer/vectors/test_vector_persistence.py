"""Index and vector files: round trips, the sidecar, refusal of corrupt or mismatched files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.vectors import persistence
from indexer.vectors.errors import VectorIndexError
from indexer.vectors.index import VectorIndex
from indexer.vectors.persistence import load_vectors, save_vectors
from support.vectors import CHECKPOINT, DIM, build, case_ids, clustered_unit_vectors


def test_save_load_round_trip_and_sidecar(tmp_path: Path, queries: np.ndarray) -> None:
    index, _, ids = build("HNSW32,Flat", n=1500, params={"efSearch": 40})
    index.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["index.faiss", "index.json", "scores.json"]
    sidecar = json.loads((tmp_path / "index.json").read_text())
    assert sidecar["checkpoint_sha256"] == CHECKPOINT
    assert sidecar["dim"] == DIM
    assert sidecar["vector_count"] == 1500
    assert sidecar["factory"] == sidecar["factory_requested"] == "HNSW32,Flat"
    assert sidecar["search_params"] == {"efSearch": 40}
    assert sidecar["fallback_reason"] is None
    assert sidecar["faiss_version"] == faiss.__version__
    assert sidecar["build_seconds"] >= 0
    assert sidecar["format_version"] == 2
    created = dt.datetime.fromisoformat(sidecar["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    digest = hashlib.sha256((tmp_path / "index.faiss").read_bytes()).hexdigest()
    assert sidecar["index_sha256"] == digest

    loaded = VectorIndex.load(tmp_path, expected_checkpoint_sha256=CHECKPOINT)
    assert loaded.spec == index.spec
    assert loaded.ntotal == 1500
    assert loaded.checkpoint_sha256 == CHECKPOINT
    np.testing.assert_array_equal(loaded.all_ids(), index.all_ids())
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    allowed = ids[:100]
    np.testing.assert_array_equal(
        loaded.search(queries, 5, allowed_ids=allowed)[1],
        index.search(queries, 5, allowed_ids=allowed)[1],
    )


def test_sidecar_layout_is_the_on_disk_format(tmp_path: Path) -> None:
    """index.json: indented by 2, keys sorted, a final newline, the keys of format version 2."""
    index, _, _ = build("Flat", n=50)
    index.save(tmp_path)
    text = (tmp_path / "index.json").read_text(encoding="utf-8")
    sidecar = json.loads(text)
    assert text == json.dumps(sidecar, indent=2, sort_keys=True) + "\n"
    assert set(sidecar) == {
        "build_seconds", "checkpoint_sha256", "created_at", "dim", "factory",
        "factory_requested", "faiss_version", "fallback_reason", "format_version",
        "index_bytes", "index_file", "index_sha256", "metric", "saved_at", "scores_bytes",
        "scores_file", "scores_sha256", "search_params", "search_params_requested", "seed",
        "train_vectors", "vector_count",
    }  # fmt: skip
    assert sidecar["scores_file"] == "scores.json"
    assert sidecar["scores_bytes"] == (tmp_path / "scores.json").stat().st_size
    assert sidecar["index_file"] == "index.faiss"
    assert sidecar["metric"] == "inner_product"
    assert sidecar["index_bytes"] == (tmp_path / "index.faiss").stat().st_size


def test_failed_save_leaves_the_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index, _, _ = build("Flat", n=50)
    index.save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def broken_write(_index: object, _path: str) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(persistence.faiss, "write_index", broken_write)
    with pytest.raises(RuntimeError, match="disk full"):
        build("Flat", n=60)[0].save(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp left
    assert VectorIndex.load(tmp_path).ntotal == 50


def test_checkpoint_mismatch_is_refused(tmp_path: Path) -> None:
    index, _, _ = build("Flat", n=50)
    index.save(tmp_path)
    other = "de" * 32
    with pytest.raises(VectorIndexError, match=r"built with checkpoint a1a1.*query model is dede"):
        VectorIndex.load(tmp_path, expected_checkpoint_sha256=other)


def test_missing_or_corrupt_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VectorIndexError, match=r"index\.json is missing"):
        VectorIndex.load(tmp_path / "nowhere")
    index, _, _ = build("Flat", n=50)
    index.save(tmp_path)
    index_file = tmp_path / "index.faiss"
    good = index_file.read_bytes()

    index_file.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(VectorIndexError, match="corrupt"):
        VectorIndex.load(tmp_path)

    garbage = bytes(len(good))  # same size, zeros; the sidecar is made to agree with it
    index_file.write_bytes(garbage)
    sidecar_file = tmp_path / "index.json"
    sidecar = json.loads(sidecar_file.read_text())
    sidecar["index_sha256"] = hashlib.sha256(garbage).hexdigest()
    sidecar_file.write_text(json.dumps(sidecar))
    with pytest.raises(VectorIndexError, match="FAISS cannot read"):
        VectorIndex.load(tmp_path)

    index_file.unlink()
    with pytest.raises(VectorIndexError, match=r"index\.faiss is missing"):
        VectorIndex.load(tmp_path)

    sidecar_file.write_text("{not json")
    with pytest.raises(VectorIndexError, match="not readable JSON"):
        VectorIndex.load(tmp_path)


def test_sidecar_that_disagrees_with_the_file_is_refused(tmp_path: Path) -> None:
    index, _, _ = build("Flat", n=50)
    index.save(tmp_path)
    sidecar_file = tmp_path / "index.json"
    sidecar = json.loads(sidecar_file.read_text())
    sidecar["vector_count"] = 51
    sidecar_file.write_text(json.dumps(sidecar))
    with pytest.raises(VectorIndexError, match="vector count 50 does not match"):
        VectorIndex.load(tmp_path)


def test_vectors_round_trip(tmp_path: Path) -> None:
    vectors = clustered_unit_vectors(30, DIM)
    ids = case_ids(30)
    save_vectors(tmp_path, vectors, ids)
    got_vectors, got_ids = load_vectors(tmp_path)
    np.testing.assert_array_equal(got_vectors, vectors)
    np.testing.assert_array_equal(got_ids, ids)
    mapped, _ = load_vectors(tmp_path, mmap=True)
    np.testing.assert_array_equal(mapped, vectors)
    assert not list(tmp_path.glob("*.tmp"))
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    np.save(tmp_path / "ids.npy", ids[:-1])
    with pytest.raises(VectorIndexError, match="does not match 30 stored vectors"):
        load_vectors(tmp_path)
    (tmp_path / "vectors.npy").unlink()
    with pytest.raises(VectorIndexError, match=r"vectors\.npy does not exist"):
        load_vectors(tmp_path)
