"""What the main branch wrote before the restructuring still works with today's code.

``legacy_main/`` holds artefacts written by commit cf91237 (the last one before the
packages were restructured) with ``legacy_main/make_fixture.py``: a tiny checkpoint, an
SQLite database with one collection and one active index version, its FAISS files, the
service's out-of-distribution cache, a training pixel cache, and the answers that
commit's service gave to three queries. The paths stored in the database point under
``/tmp/medret-legacy`` where they were built; each test works on a copy whose stored
paths are moved to the copy (a relocation, as an operator moving a data folder would do),
and nothing else is changed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

FIXTURE = Path(__file__).resolve().parent / "legacy_main"
BUILT_UNDER = "/tmp/medret-legacy"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
LEGACY_REVISION = "0001"  # the schema revision the old main wrote


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    root = tmp_path / "legacy"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    with sqlite3.connect(root / "data" / "medret.db") as db:
        for table, column in (
            ("collections", "checkpoint_path"),
            ("cases", "source_uri"),
            ("index_versions", "path"),
        ):
            db.execute(
                f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (BUILT_UNDER, str(root))
            )
    return root


def database_url(root: Path) -> str:
    return f"sqlite:///{root / 'data' / 'medret.db'}"


def test_an_old_checkpoint_loads_with_its_labels_and_hash(legacy: Path) -> None:
    from labels import Task
    from model.checkpoint import file_sha256, load_checkpoint

    loaded = load_checkpoint(legacy / "checkpoint.safetensors")
    assert loaded.meta.labels.codes == ("AAA", "BBB", "CCC")
    assert loaded.meta.model.task is Task.SINGLE_LABEL
    assert loaded.meta.preprocessing.image_size == (32, 32)
    with sqlite3.connect(legacy / "data" / "medret.db") as db:
        (stored,) = db.execute("SELECT checkpoint_sha256 FROM collections").fetchone()
    assert loaded.sha256 == stored == file_sha256(legacy / "checkpoint.safetensors")


def test_an_old_database_is_migrated_in_place_and_keeps_its_cases(legacy: Path) -> None:
    from indexer.store import MetadataStore, StoreError, head_revision

    with pytest.raises(StoreError, match=f"at schema revision {LEGACY_REVISION}, but"):
        MetadataStore.open(database_url(legacy), migrate=False)
    store = MetadataStore.open(database_url(legacy))  # what every service start does
    try:
        (collection,) = store.list_collections()
        assert collection.name == "legacy"
        assert store.count_cases(collection.id) == 12
        assert collection.group_salt_fingerprint is None  # old main recorded no salt
    finally:
        store.close()
    with sqlite3.connect(legacy / "data" / "medret.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)
        ]


def test_an_old_collection_adopts_the_salt_of_its_next_full_build(legacy: Path) -> None:
    """Old main hashed group keys with its public default salt and recorded none: adding to
    them is refused; a full build hashes every case again and records the salt."""
    from indexer.builder import IndexBuilder, IndexerConfig
    from indexer.group_keys import group_salt_fingerprint, hash_group_key
    from indexer.store import MetadataStore, StoreError
    from support.group_salt import OTHER_GROUP_SALT, TEST_GROUP_SALT

    labels = legacy / "archive" / "labels.csv"
    rows = labels.read_text().splitlines()
    groups = {row.split(",")[0]: f"P{i // 2}" for i, row in enumerate(rows[1:])}
    labels.write_text(
        "\n".join([rows[0] + ",group", *(f"{row},{groups[row.split(',')[0]]}" for row in rows[1:])])
    )
    with sqlite3.connect(legacy / "data" / "medret.db") as db:
        for key, group in groups.items():
            old = hash_group_key(group, "medret")  # the old default salt
            db.execute("UPDATE cases SET group_key_hash = ? WHERE external_id = ?", (old, key))

    def build(salt: str, mode: str) -> None:
        cfg = IndexerConfig(data_dir=legacy / "data", group_salt=salt, workers=0, progress=False)
        IndexBuilder(store, cfg).build(
            "legacy", legacy / "checkpoint.safetensors", legacy / "archive", mode=mode
        )

    store = MetadataStore.open(database_url(legacy))
    try:
        with pytest.raises(StoreError, match="hashed before the salt was recorded; run a full"):
            build(TEST_GROUP_SALT, "add")
        build(TEST_GROUP_SALT, "full")
        collection = store.get_collection("legacy")
        assert collection.group_salt_fingerprint == group_salt_fingerprint(TEST_GROUP_SALT)
        cases = store.get_cases(store.find_case_ids(collection.id, external_ids=list(groups)))
        assert {case.external_id: case.group_key_hash for case in cases.values()} == {
            key: hash_group_key(group, TEST_GROUP_SALT) for key, group in groups.items()
        }
        with pytest.raises(StoreError, match="hashed with another MEDRET_GROUP_SALT"):
            build(OTHER_GROUP_SALT, "add")
    finally:
        store.close()


def test_an_old_index_version_answers_queries_as_it_did(legacy: Path) -> None:
    from app.main import create_app
    from app.settings import Settings

    ood_cache = sorted((legacy / "data" / "cache" / "ood").iterdir())
    stamps = [path.stat().st_mtime_ns for path in ood_cache]
    settings = Settings(data_dir=legacy / "data", database_url=database_url(legacy))
    with TestClient(create_app(settings)) as client:
        for name, expected in EXPECTED["answers"].items():
            image = (legacy / "archive" / "images" / name).read_bytes()
            response = client.post("/query", files={"file": (name, image, "image/png")})
            assert response.status_code == 200, response.text
            body = response.json()
            assert [case["case_id"] for case in body["cases"]] == [c for c, _ in expected["cases"]]
            np.testing.assert_allclose(
                [case["score"] for case in body["cases"]],
                [s for _, s in expected["cases"]],
                atol=1e-5,
            )
            assert [p["code"] for p in body["predictions"]] == [
                c for c, _ in expected["predictions"]
            ]
            np.testing.assert_allclose(
                [p["probability"] for p in body["predictions"]],
                [p for _, p in expected["predictions"]],
                atol=1e-5,
            )
    # the out-of-distribution calibration cached by the old service was reused, not redone
    assert sorted((legacy / "data" / "cache" / "ood").iterdir()) == ood_cache
    assert [path.stat().st_mtime_ns for path in ood_cache] == stamps


def test_an_old_pixel_cache_is_reused_row_for_row(legacy: Path) -> None:
    from archives.canvas import prepare_sample
    from archives.registry import read_archive
    from training.pixel_cache import PixelCache

    samples = read_archive(legacy / "archive").samples
    cache = PixelCache(legacy / "cache", (32, 32))
    rows, report = cache.lookup(samples)
    assert rows.tolist() == EXPECTED["cache_rows"]
    assert report.reused == len(samples)
    assert report.failed == []
    for sample, row in zip(samples, rows, strict=True):
        canvas = prepare_sample(sample, (32, 32)).canvas
        assert canvas is not None
        np.testing.assert_array_equal(cache.batch(np.asarray([row]))[0].numpy(), canvas.numpy())
