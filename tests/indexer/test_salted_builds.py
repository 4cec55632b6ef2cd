"""Indexing needs the deployment's secret salt: the builder and ``medret index`` refuse a
missing, weak or different one before any image is embedded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from indexer.builder import IndexBuilder, IndexerConfig
from indexer.group_keys import GroupSaltError, group_salt_fingerprint, hash_group_key
from indexer.store import MetadataStore, StoreError
from support.archives import make_grouped_manifest
from support.checkpoints import make_checkpoint
from support.group_salt import OTHER_GROUP_SALT, TEST_GROUP_SALT

GROUPS = {"images/g0.png": "P1", "images/g1.png": "P1", "images/g2.png": "P2"}


@pytest.fixture
def grouped(tmp_path: Path) -> tuple[Path, Path]:
    """A manifest of three images of two patients, and a checkpoint for its labels."""
    archive = make_grouped_manifest(tmp_path / "archive", groups=tuple(GROUPS.values()))
    return archive, make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))


@pytest.fixture
def store(tmp_path: Path):
    store = MetadataStore.open(f"sqlite:///{tmp_path / 'medret.db'}")
    yield store
    store.close()


def builder(store: MetadataStore, data_dir: Path, salt: str) -> IndexBuilder:
    cfg = IndexerConfig(data_dir=data_dir, group_salt=salt, workers=0, progress=False)
    return IndexBuilder(store, cfg)


def stored_hashes(store: MetadataStore, collection: str) -> dict[str, str | None]:
    coll = store.get_collection(collection)
    ids = store.find_case_ids(coll.id, external_ids=list(GROUPS))
    return {case.external_id: case.group_key_hash for case in store.get_cases(ids).values()}


@pytest.mark.parametrize(("salt", "reason"), [("", "is not set"), ("medret", "is too short")])
def test_a_build_without_a_good_salt_stops_before_any_work(
    store: MetadataStore, grouped: tuple[Path, Path], tmp_path: Path, salt: str, reason: str
) -> None:
    archive, checkpoint = grouped
    with pytest.raises(GroupSaltError, match=f"^MEDRET_GROUP_SALT {reason}"):
        builder(store, tmp_path / "data", salt).build("derm", checkpoint, archive)
    assert store.list_collections() == []
    assert store.list_jobs() == []
    assert not (tmp_path / "data").exists()  # no version folder either


def test_a_collection_keeps_the_salt_of_its_first_build(
    store: MetadataStore, grouped: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, checkpoint = grouped
    first = builder(store, tmp_path / "data", TEST_GROUP_SALT).build("derm", checkpoint, archive)
    assert first.added == 3
    coll = store.get_collection("derm")
    assert coll.group_salt_fingerprint == group_salt_fingerprint(TEST_GROUP_SALT)
    hashes = stored_hashes(store, "derm")
    assert hashes == {key: hash_group_key(group, TEST_GROUP_SALT) for key, group in GROUPS.items()}

    other = builder(store, tmp_path / "data", OTHER_GROUP_SALT)
    for mode in ("full", "add"):
        with pytest.raises(StoreError, match="hashed with another MEDRET_GROUP_SALT"):
            other.build("derm", checkpoint, archive, mode=mode)
    assert store.active_version(coll.id).version == first.version  # nothing was built
    assert stored_hashes(store, "derm") == hashes
    assert [job.id for job in store.list_jobs(coll.id)] == [first.job_id]

    again = builder(store, tmp_path / "data", TEST_GROUP_SALT).build("derm", checkpoint, archive)
    assert (again.version, again.updated) == (first.version + 1, 3)
    assert stored_hashes(store, "derm") == hashes


# --------------------------------------------------------------------------- the command


def medret_index(data_dir: Path, *args: str, salt: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    if salt is not None:
        env["MEDRET_GROUP_SALT"] = salt
    return subprocess.run(
        [sys.executable, "-m", "medret", "index", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    """The one line ``medret index`` printed for its non-zero exit (and no traceback)."""
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("medret index:")]
    return line


@pytest.mark.parametrize(
    ("salt", "reason"),
    [(None, "is not set"), ("medret", "is too short"), ("a" * 64, "repeats a run")],
    ids=["unset", "old-default", "one-character"],
)
def test_medret_index_refuses_a_missing_or_weak_salt(
    grouped: tuple[Path, Path], tmp_path: Path, salt: str | None, reason: str
) -> None:
    archive, checkpoint = grouped
    build = ["--collection", "derm", "--checkpoint", str(checkpoint), "--source", str(archive)]
    line = refusal(medret_index(tmp_path / "data", *build, salt=salt))
    assert line.startswith(f"medret index: MEDRET_GROUP_SALT {reason}")
    assert "python -c 'import secrets; print(secrets.token_hex(32))'" in line
    listing = medret_index(tmp_path / "data", "--list", salt=None)  # listing needs no salt
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert json.loads(listing.stdout) == []


def test_medret_index_refuses_another_salt_for_a_collection(
    grouped: tuple[Path, Path], tmp_path: Path
) -> None:
    archive, checkpoint = grouped
    build = ["--collection", "derm", "--checkpoint", str(checkpoint), "--source", str(archive)]
    first = medret_index(tmp_path / "data", *build, salt=TEST_GROUP_SALT)
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["added"] == 3

    line = refusal(medret_index(tmp_path / "data", *build, "--add", salt=OTHER_GROUP_SALT))
    assert line.startswith(
        "medret index: collection 'derm' holds patient/lesion keys hashed with another "
        "MEDRET_GROUP_SALT"
    )
    assert OTHER_GROUP_SALT not in line
    assert TEST_GROUP_SALT not in line

    removed = medret_index(  # a removal hashes nothing: it needs no salt
        tmp_path / "data", "--collection", "derm", "--remove", "images/g2.png", salt=None
    )
    assert removed.returncode == 0, removed.stderr[-2000:]
    assert json.loads(removed.stdout)["deleted"] == 1
