"""``medret index`` end to end: full builds, --add, --remove, prune, filters, kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from archives.registry import read_archive
from indexer.builder import IndexBuilder, IndexBuildError, IndexerConfig
from indexer.embedding import embed_samples
from indexer.search import CollectionIndex, SearchError
from indexer.store import JobState, MetadataStore
from model.checkpoint import load_checkpoint
from support.checkpoints import make_checkpoint
from support.group_salt import SALT_ENVIRONMENT, TEST_GROUP_SALT
from support.images import write_image_folder
from support.real_data import HAM_CODES


@pytest.fixture
def env(tmp_path: Path):
    data_dir = tmp_path / "data"
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'medret.db'}")
    cfg = IndexerConfig(
        data_dir=data_dir, group_salt=TEST_GROUP_SALT, workers=0, progress=False, batch_size=16
    )
    builder = IndexBuilder(store, cfg)
    ckpt = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    yield store, builder, ckpt, tmp_path
    store.close()


def query_vectors(ckpt: Path, folder: Path) -> tuple[np.ndarray, list[str]]:
    loaded = load_checkpoint(ckpt)
    archive = read_archive(folder, "image_folder")
    result = embed_samples(
        loaded.model,
        loaded.meta.preprocessing,
        list(archive.samples),
        device=torch.device("cpu"),
        workers=0,
        progress=False,
    )
    return result.vectors, [archive.samples[i].key for i in result.indices]


def test_full_build_then_add_then_remove(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 20, seed=1)
    first = builder.build("derm", ckpt, source, layout="image_folder")
    assert (first.version, first.added, first.vector_count) == (1, 20, 20)
    coll = store.get_collection("derm")
    assert store.count_cases(coll.id) == 20

    # every image finds itself first, with similarity ~1
    index = CollectionIndex.load(store, "derm")
    vectors, keys = query_vectors(ckpt, source)
    hits = index.search(store, vectors, checkpoint_sha256=load_checkpoint(ckpt).sha256, top_k=3)
    for key, row in zip(keys, hits, strict=True):
        assert row[0].case.external_id == key
        assert row[0].score == pytest.approx(1.0, abs=1e-4)

    # the same archive again with --add: nothing new
    again = builder.build("derm", ckpt, source, layout="image_folder", mode="add")
    assert (again.added, again.skipped_known, again.vector_count) == (0, 20, 20)

    # new images (and one duplicate of an old one under another name) → only the new ones
    write_image_folder(source, 5, seed=2, prefix="new")
    shutil.copy(source / "img_000.png", source / "copy_of_000.png")
    added = builder.build("derm", ckpt, source, layout="image_folder", mode="add")
    assert added.added == 5
    assert added.skipped_known == 21
    assert added.vector_count == 25
    assert store.active_version(coll.id).version == 3

    # remove one case by external id: gone from SQL and from the index
    removed = builder.remove("derm", external_ids=["img_007.png"])
    assert removed.deleted == 1
    assert removed.vector_count == 24
    index = CollectionIndex.load(store, "derm")
    assert index.size == 24
    hits = index.search(store, vectors, checkpoint_sha256=load_checkpoint(ckpt).sha256, top_k=30)
    assert all(h.case.external_id != "img_007.png" for row in hits for h in row)
    assert store.find_case_ids(coll.id, external_ids=["img_007.png"]) == []


def test_unreadable_files_are_reported_not_fatal(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 6, seed=3)
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (source / "notes.dcm").write_text("not a dicom")
    result = builder.build("derm", ckpt, source, layout="image_folder")
    assert result.added == 6
    assert sorted(k for k, _ in result.failed) == ["broken.png", "notes.dcm"]
    job = store.get_job(result.job_id)
    assert job.state == JobState.SUCCEEDED
    assert job.counts["failed"] == 2


def test_checkpoint_rules(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 8, seed=4)
    builder.build("derm", ckpt, source, layout="image_folder")
    other = make_checkpoint(tmp / "b.safetensors", ("A", "B"), seed=7)
    with pytest.raises(IndexBuildError, match="--add needs the same checkpoint"):
        builder.build("derm", other, source, layout="image_folder", mode="add")
    index = CollectionIndex.load(store, "derm")
    with pytest.raises(SearchError, match="indexed with"):
        index.search(
            store,
            np.ones((1, 32), np.float32) / np.sqrt(32),
            checkpoint_sha256=load_checkpoint(other).sha256,
        )
    # a full reindex adopts the new checkpoint; case ids of known images are kept
    coll = store.get_collection("derm")
    before = store.existing_hashes(coll.id)
    builder.build("derm", other, source, layout="image_folder")
    assert store.get_collection("derm").checkpoint_sha256 == load_checkpoint(other).sha256
    assert store.existing_hashes(coll.id) == before
    assert store.active_version(coll.id).checkpoint_sha256 == load_checkpoint(other).sha256


def test_full_reindex_drops_cases_no_longer_in_the_archive(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 10, seed=5)
    builder.build("derm", ckpt, source, layout="image_folder")
    (source / "img_003.png").unlink()
    result = builder.build("derm", ckpt, source, layout="image_folder")
    assert (result.deleted, result.vector_count) == (1, 9)
    assert store.count_cases(store.get_collection("derm").id) == 9


def test_full_reindex_handles_renames_swaps_and_changed_files(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 6, seed=9)
    builder.build("derm", ckpt, source, layout="image_folder")
    coll = store.get_collection("derm")
    ids_before = store.existing_hashes(coll.id)
    # swap two names, and replace a third file's content under the same name
    (source / "img_000.png").rename(source / "tmp.png")
    (source / "img_001.png").rename(source / "img_000.png")
    (source / "tmp.png").rename(source / "img_001.png")
    write_image_folder(tmp / "other", 1, seed=99)
    shutil.copy(tmp / "other" / "img_000.png", source / "img_002.png")
    result = builder.build("derm", ckpt, source, layout="image_folder")
    assert (result.added, result.deleted, result.vector_count) == (1, 1, 6)
    after = store.existing_hashes(coll.id)
    moved = {h: i for h, i in ids_before.items() if h in after}
    assert all(after[h] == i for h, i in moved.items())  # known content keeps its case id
    by_name = {store.get_case(i).external_id: h for h, i in after.items()}
    assert by_name["img_000.png"] != by_name["img_001.png"]


def test_full_reindex_keeps_cases_whose_files_failed_to_read(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 5, seed=10)
    builder.build("derm", ckpt, source, layout="image_folder")
    (source / "img_004.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a bad re-save
    result = builder.build("derm", ckpt, source, layout="image_folder")
    assert [k for k, _ in result.failed] == ["img_004.png"]
    assert result.deleted == 0
    assert result.vector_count == 5
    assert store.count_cases(store.get_collection("derm").id) == 5


def test_filters_apply_inside_the_search(env) -> None:
    store, builder, ckpt, tmp = env
    root = tmp / "manifest"
    write_image_folder(root / "images", 12, seed=6)
    rows = ["file,label,split"] + [
        f"img_{i:03d}.png,{'A' if i % 3 else 'B'},{'train' if i < 8 else 'test'}" for i in range(12)
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    builder.build("derm", ckpt, root)
    index = CollectionIndex.load(store, "derm")
    sha = load_checkpoint(ckpt).sha256
    query = np.random.default_rng(0).normal(size=(2, 32)).astype(np.float32)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    hits = index.search(store, query, checkpoint_sha256=sha, top_k=10, filters={"label": "B"})
    assert all(len(row) == 4 for row in hits)  # all four B cases, nothing else
    assert all(tuple(h.case.labels) == ("B",) for row in hits for h in row)
    hits = index.search(
        store, query, checkpoint_sha256=sha, top_k=10, filters={"split": "test", "label": "A"}
    )
    assert {h.case.external_id for h in hits[0]} == {"img_008.png", "img_010.png", "img_011.png"}


def test_prune_removes_old_and_abandoned_versions(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 4, seed=8)
    for _ in range(3):
        builder.build("derm", ckpt, source, layout="image_folder")
    folder = tmp / "data" / "indexes" / "derm"
    (folder / "v0099.tmp-deadbeef").mkdir()
    assert builder.prune("derm", keep=1) == [1]
    assert sorted(p.name[:5] for p in folder.iterdir()) == ["v0002", "v0003"]
    assert CollectionIndex.load(store, "derm").version.version == 3


def test_a_version_folder_holds_the_index_and_its_vectors(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 3, seed=11)
    result = builder.build("derm", ckpt, source, layout="image_folder")
    version = store.active_version(store.get_collection("derm").id)
    folder = Path(version.path)
    assert folder.name == f"v0001-{result.job_id[:8]}"
    assert sorted(p.name for p in folder.iterdir()) == [
        "ids.npy",
        "index.faiss",
        "index.json",
        "scores.json",
        "vectors.npy",
    ]  # no temporary file left, and no staging folder beside it
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_an_unknown_mode_is_refused_before_anything_starts(env) -> None:
    store, builder, ckpt, tmp = env
    source = write_image_folder(tmp / "archive", 2, seed=12)
    with pytest.raises(IndexBuildError, match="mode is 'full' or 'add', not 'remove'"):
        builder.build("derm", ckpt, source, layout="image_folder", mode="remove")
    assert store.list_collections() == []


CLEAN_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")},
    **SALT_ENVIRONMENT,
}


def medret(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medret", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=CLEAN_ENV,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_ham10000_index_add_remove_and_kill(shared_data: Path, tmp_path: Path) -> None:
    ham = shared_data / "ham10000"
    ckpt = make_checkpoint(tmp_path / "ham.safetensors", HAM_CODES)
    common = ["--data-dir", str(tmp_path / "data"), "--collection", "derm"]
    first = medret("index", *common, "--checkpoint", str(ckpt), "--source", str(ham))
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads(first.stdout)
    assert summary["added"] == 5105
    assert summary["vector_count"] == 5105
    assert summary["failed"] == []

    again = medret("index", *common, "--checkpoint", str(ckpt), "--source", str(ham), "--add")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["added"] == 0

    key = read_archive(ham).samples[0].key
    gone = medret("index", *common, "--remove", key)
    assert gone.returncode == 0, gone.stderr[-2000:]
    listing = medret("index", "--data-dir", str(tmp_path / "data"), "--list")
    assert json.loads(listing.stdout)[0]["cases"] == 5104

    # kill -9 a full build in the middle: the earlier version stays active and searchable
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'data' / 'medret.db'}")
    coll = store.get_collection("derm")
    active_before = store.active_version(coll.id)
    other = make_checkpoint(tmp_path / "other.safetensors", HAM_CODES, seed=3)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medret",
            "index",
            *common,
            "--checkpoint",
            str(other),
            "--source",
            str(ham),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=CLEAN_ENV,
    )
    deadline = time.monotonic() + 300
    job = None
    while time.monotonic() < deadline and proc.poll() is None:
        job = store.running_job(coll.id)
        if job is not None and (job.progress or 0) > 0.05:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the build finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert store.active_version(coll.id).id == active_before.id
    assert store.reap_stale_jobs() == [job.id]
    assert store.get_job(job.id).state == JobState.FAILED
    index = CollectionIndex.load(store, "derm")
    assert index.size == 5104
    assert index.version.checkpoint_sha256 == load_checkpoint(ckpt).sha256
    store.close()


def test_unreadable_array_rows_are_reported_not_fatal(tmp_path: Path) -> None:
    from archives.records import ArrayRef, Sample

    ckpt = load_checkpoint(make_checkpoint(tmp_path / "a.safetensors", ("A", "B")))
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=np.zeros((2, 28, 28), np.uint8))
    samples = [
        Sample(key="train/0", labels=(), split="train", array=ArrayRef(npz, "train_images", 0)),
        Sample(key="train/9", labels=(), split="train", array=ArrayRef(npz, "train_images", 9)),
        Sample(
            key="gone/0",
            labels=(),
            split="train",
            array=ArrayRef(tmp_path / "missing.npz", "train_images", 0),
        ),
    ]
    result = embed_samples(
        ckpt.model,
        ckpt.meta.preprocessing,
        samples,
        device=torch.device("cpu"),
        workers=0,
        progress=False,
    )
    assert result.indices == [0]
    assert [key for key, _ in result.failed] == ["train/9", "gone/0"]
