"""The SQL metadata store, on SQLite and on PostgreSQL (``store_url`` in conftest.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, event, inspect, update
from sqlalchemy.exc import IntegrityError

from indexer.store import (
    JOB_DIED_MESSAGE,
    Base,
    CaseRow,
    CollectionInfo,
    IndexVersion,
    MetadataStore,
    StoreError,
    alembic_config,
    hash_group_key,
    head_revision,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture
def store(store_url: str) -> Iterator[MetadataStore]:
    store = MetadataStore.open(store_url)
    yield store
    store.close()


def make_collection(store: MetadataStore, name: str = "derm") -> CollectionInfo:
    return store.ensure_collection(
        name,
        checkpoint_sha256=SHA_A,
        checkpoint_path="/ckpt/a.safetensors",
        task="single_label",
        label_codes=["MEL", "NV", "BCC"],
        label_names=["Melanoma", "Melanocytic nevus", "Basal cell carcinoma"],
    )


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def case_row(case_id: int, key: str, **fields: Any) -> CaseRow:
    return CaseRow(
        id=case_id,
        external_id=key,
        source_uri=f"file:///archive/{key}.png",
        content_hash=content_hash(key),
        **fields,
    )


def add_cases(store: MetadataStore, collection_id: int, *rows: CaseRow) -> None:
    with store.session() as session:
        store.add_cases(session, rows, collection_id=collection_id)


# --------------------------------------------------------------------------- schema


def test_migrations_create_every_table_and_match_the_models(store_url: str) -> None:
    store = MetadataStore.open(store_url)
    try:
        assert store.current_revision() == head_revision()
        tables = set(inspect(store.engine).get_table_names())
        assert {"collections", "cases", "id_counter", "index_versions", "jobs"} <= tables
        with store.engine.connect() as conn:  # the migration builds exactly the models' schema
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        for table in Base.metadata.sorted_tables:  # which compare_metadata does not check
            reflected = inspect(store.engine).get_check_constraints(table.name)
            modelled = [c.name for c in table.constraints if isinstance(c, CheckConstraint)]
            assert sorted(c["name"] for c in reflected) == sorted(modelled)

        cfg = alembic_config()  # the downgrade removes everything; upgrading again restores it
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert store.current_revision() is None
        assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
    finally:
        store.close()
    again = MetadataStore.open(store_url)
    assert again.current_revision() == head_revision()
    assert again.reserve_ids(1) == [1]
    again.close()


def test_an_unmigrated_database_is_refused_without_migrate(store_url: str) -> None:
    with pytest.raises(StoreError, match="is not migrated"):
        MetadataStore.open(store_url, migrate=False)
    MetadataStore.open(store_url).close()
    store = MetadataStore.open(store_url, migrate=False)
    assert store.current_revision() == head_revision()
    store.close()


# --------------------------------------------------------------------------- collections


def test_ensure_collection_is_idempotent_and_reports_a_changed_checkpoint(
    store: MetadataStore,
) -> None:
    first = make_collection(store)
    assert first.created
    assert not first.checkpoint_changed
    again = make_collection(store)
    assert (again.id, again.created, again.checkpoint_changed) == (first.id, False, False)
    assert store.list_collections() == [store.get_collection("derm")]

    changed = store.ensure_collection(
        "derm",
        checkpoint_sha256=SHA_B,
        checkpoint_path="/ckpt/b.safetensors",
        task="single_label",
        label_codes=["MEL", "NV", "BCC"],
        label_names=["Melanoma", "Melanocytic nevus", "Basal cell carcinoma"],
    )
    assert changed.checkpoint_changed
    assert not changed.created
    assert changed.id == first.id
    stored = store.get_collection("derm")
    assert (stored.checkpoint_sha256, stored.checkpoint_path) == (SHA_B, "/ckpt/b.safetensors")
    assert stored.label_codes == ("MEL", "NV", "BCC")
    assert stored.created_at.tzinfo is not None
    assert stored.created_at.utcoffset() == dt.timedelta(0)

    with pytest.raises(StoreError, match="collection 'chest' does not exist"):
        store.get_collection("chest")
    with pytest.raises(StoreError, match="task"):
        store.ensure_collection(
            "chest",
            checkpoint_sha256=SHA_A,
            checkpoint_path="c",
            task="softmax",
            label_codes=["A"],
            label_names=["a"],
        )


# --------------------------------------------------------------------------- cases


def test_add_get_find_and_delete_cases(store: MetadataStore) -> None:
    coll = make_collection(store)
    ids = store.reserve_ids(3)
    add_cases(
        store,
        coll.id,
        case_row(ids[0], "isic_0", labels=["MEL"], split="train", meta={"modality": "derm"}),
        case_row(ids[1], "isic_1", labels=["NV"], split="test", group_key_hash=SHA_B),
        case_row(ids[2], "isic_2"),
    )
    assert store.count_cases(coll.id) == 3
    assert store.existing_hashes(coll.id) == {content_hash(f"isic_{i}"): ids[i] for i in range(3)}

    case = store.get_case(ids[0])
    assert case is not None
    assert (case.collection_id, case.external_id, case.labels) == (coll.id, "isic_0", ("MEL",))
    assert (case.split, case.meta, case.group_key_hash) == ("train", {"modality": "derm"}, None)
    assert case.created_at.utcoffset() == dt.timedelta(0)
    assert store.get_case(ids[2] + 1000) is None

    selects: list[str] = []
    event.listen(
        store.engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_: (
            selects.append(sql) if sql.lstrip().startswith("SELECT") else None
        ),
    )
    cases = store.get_cases([ids[2], ids[0], ids[2] + 1000])
    assert sorted(cases) == [ids[0], ids[2]]
    assert len(selects) == 1
    assert cases[ids[2]].labels == ()
    assert cases[ids[2]].split == ""

    found = store.find_case_ids(coll.id, external_ids=["isic_1", "nope"], case_ids=[ids[2], 999])
    assert found == [ids[1], ids[2]]
    other = make_collection(store, "other")
    assert store.find_case_ids(other.id, case_ids=ids) == []

    with store.session() as session:
        assert store.delete_cases(session, [ids[0], ids[1], 999_999]) == 2
    assert store.get_case(ids[0]) is None
    assert store.count_cases(coll.id) == 1


def test_update_cases_and_switch_the_collection_checkpoint_in_one_transaction(
    store: MetadataStore,
) -> None:
    coll = make_collection(store)
    ids = store.reserve_ids(2)
    add_cases(store, coll.id, case_row(ids[0], "a", labels=["MEL"]), case_row(ids[1], "b"))
    assert sorted(store.external_ids(coll.id)) == ["a", "b"]
    with store.session() as session:
        store.update_cases(session, [case_row(ids[0], "a", labels=["NV"], split="test")])
        store.set_collection_checkpoint(
            session, coll.id, checkpoint_sha256=SHA_B, checkpoint_path="/ckpt/b"
        )
    updated = store.get_case(ids[0])
    assert updated is not None
    assert (updated.labels, updated.split) == (("NV",), "test")
    assert store.get_collection("derm").checkpoint_sha256 == SHA_B
    with pytest.raises(StoreError, match="do not exist"), store.session() as session:
        store.update_cases(session, [case_row(ids[1] + 100, "zzz")])


def test_the_same_image_twice_in_a_collection_is_a_clear_error(store: MetadataStore) -> None:
    coll = make_collection(store)
    ids = store.reserve_ids(4)
    add_cases(store, coll.id, case_row(ids[0], "isic_0"))

    duplicate = CaseRow(
        id=ids[2], external_id="copy_of_isic_0", source_uri="u", content_hash=content_hash("isic_0")
    )
    with pytest.raises(StoreError, match="same content hash"):
        add_cases(store, coll.id, case_row(ids[1], "isic_1"), duplicate)
    assert store.count_cases(coll.id) == 1  # the whole failed transaction was rolled back

    with pytest.raises(StoreError, match="same external id"):
        add_cases(store, coll.id, CaseRow(ids[3], "isic_0", "u", content_hash("new")))

    with pytest.raises(StoreError, match="collection does not exist"):
        add_cases(store, coll.id + 100, CaseRow(ids[3], "new", "u", content_hash("new")))

    other = make_collection(store, "other")  # the same image in another collection is fine
    add_cases(store, other.id, duplicate)
    assert store.count_cases(other.id) == 1


def test_identifiers_never_enter_the_store(store: MetadataStore) -> None:
    coll = make_collection(store)
    (case_id,) = store.reserve_ids(1)
    with pytest.raises(StoreError, match="direct identifier"):
        add_cases(store, coll.id, case_row(case_id, "x", meta={"PatientName": "Doe^John"}))
    with pytest.raises(StoreError, match="never the key"):
        add_cases(store, coll.id, case_row(case_id, "x", group_key_hash="HAM_0000118"))
    assert store.count_cases(coll.id) == 0


def test_reserve_ids_hands_out_disjoint_ranges_even_to_concurrent_callers(
    store: MetadataStore,
) -> None:
    first, second = store.reserve_ids(5), store.reserve_ids(3)
    assert len(first) == 5
    assert len(second) == 3
    assert max(first) < min(second)
    assert store.reserve_ids(0) == []

    reserved: list[list[int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        try:
            start.wait()
            for i in range(15):
                reserved.append(store.reserve_ids(1 + (seed + i) % 4))
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    every = [i for chunk in [first, second, *reserved] for i in chunk]
    assert len(reserved) == 8 * 15
    assert len(set(every)) == len(every)  # no id handed out twice
    assert all(chunk == list(range(chunk[0], chunk[0] + len(chunk))) for chunk in reserved)


def test_case_ids_matching_label_split_and_metadata(store: MetadataStore) -> None:
    coll = make_collection(store)
    ids = store.reserve_ids(4)
    add_cases(
        store,
        coll.id,
        case_row(ids[0], "a", labels=["MEL"], split="train", meta={"modality": "derm", "age": 45}),
        case_row(ids[1], "b", labels=["NV", "MEL"], split="test", meta={"modality": "xr"}),
        case_row(ids[2], "c", labels=["NV"], split="train", meta={"modality": "derm"}),
        case_row(ids[3], "d", meta={"dermoscopic": True}),
    )
    other = make_collection(store, "other")
    (other_id,) = store.reserve_ids(1)
    add_cases(store, other.id, case_row(other_id, "a", labels=["MEL"], split="train"))

    def matching(**filters: str) -> list[int]:
        return store.case_ids_matching(coll.id, filters)

    assert matching() == ids
    assert matching(label="MEL") == [ids[0], ids[1]]
    assert matching(label="NV", split="train") == [ids[2]]
    assert matching(split="test") == [ids[1]]
    assert matching(modality="derm") == [ids[0], ids[2]]
    assert matching(modality="derm", label="MEL", split="train") == [ids[0]]
    assert matching(age="45") == [ids[0]]  # non-string values compare as their JSON text
    assert matching(dermoscopic="true") == [ids[3]]
    assert matching(label="BCC") == []
    assert matching(modality="ct") == []
    assert matching(nonexistent_key="x") == []
    with pytest.raises(StoreError, match="metadata filter key"):
        matching(**{"bad'key": "x"})


# --------------------------------------------------------------------------- versions


def test_exactly_one_active_version_and_rollback_keeps_the_previous(store: MetadataStore) -> None:
    coll = make_collection(store)
    assert store.next_version_number(coll.id) == 1
    assert store.active_version(coll.id) is None

    def build(n: int) -> int:
        version = store.create_version(
            coll.id, path=f"/idx/v{n}", checkpoint_sha256=SHA_A, factory="Flat", params={"n": n}
        )
        assert (version.version, version.state, version.is_active) == (n, "building", False)
        return version.id

    v1 = build(1)
    with store.session() as session:
        store.activate_version(session, v1, vector_count=10)
    v2 = build(2)
    with store.session() as session:
        store.activate_version(session, v2, vector_count=12)
    active = store.active_version(coll.id)
    assert active is not None
    assert (active.id, active.vector_count, active.state) == (
        v2,
        12,
        "ready",
    )
    assert active.completed_at is not None
    assert active.params == {"n": 2}

    v3 = build(3)

    def activate_then_crash() -> None:
        with store.session() as session:
            store.activate_version(session, v3, vector_count=13)
            raise RuntimeError("crash after activation")

    with pytest.raises(RuntimeError, match="crash after activation"):
        activate_then_crash()
    active = store.active_version(coll.id)
    assert active is not None
    assert active.id == v2
    states = {v.version: (v.state, v.is_active) for v in store.list_versions(coll.id)}
    assert states == {1: ("ready", False), 2: ("ready", True), 3: ("building", False)}

    # the database itself refuses a second active version (partial unique index)
    with pytest.raises(IntegrityError), store.session() as session:
        session.execute(update(IndexVersion).where(IndexVersion.id == v1).values(is_active=True))

    store.fail_version(v3, "disk full")
    with pytest.raises(StoreError, match="failed"), store.session() as session:
        store.activate_version(session, v3, vector_count=13)
    with pytest.raises(StoreError, match="active"):
        store.fail_version(v2, "no")
    with pytest.raises(StoreError, match="active"):
        store.mark_pruned([v1, v2])
    store.mark_pruned([v1])
    states = {v.version: (v.state, v.is_active) for v in store.list_versions(coll.id)}
    assert states == {1: ("pruned", False), 2: ("ready", True), 3: ("failed", False)}
    assert store.list_versions(coll.id)[2].message == "disk full"
    assert store.next_version_number(coll.id) == 4


# --------------------------------------------------------------------------- jobs


def test_job_lifecycle(store: MetadataStore) -> None:
    coll = make_collection(store)
    job = store.create_job("full", coll.id)
    assert (job.state, job.progress, job.counts, job.errors) == ("queued", 0.0, {}, ())
    store.start_job(job.id, pid=os.getpid(), host=socket.gethostname())
    started = store.get_job(job.id)
    assert started is not None
    assert started.state == "running"
    assert started.heartbeat_at is not None
    running = store.running_job(coll.id)
    assert running is not None
    assert running.id == job.id

    time.sleep(0.01)
    store.update_job(job.id, progress=0.5, counts={"seen": 5}, message="embedding")
    updated = store.get_job(job.id)
    assert updated is not None
    assert updated.heartbeat_at is not None
    assert (updated.progress, updated.counts, updated.message) == (0.5, {"seen": 5}, "embedding")
    assert updated.heartbeat_at > started.heartbeat_at

    store.finish_job(job.id, state="succeeded", counts={"added": 5})
    done = store.get_job(job.id)
    assert done is not None
    assert (done.state, done.progress) == ("succeeded", 1.0)
    assert done.finished_at is not None
    assert store.running_job(coll.id) is None
    with pytest.raises(StoreError, match="succeeded"):
        store.update_job(job.id, progress=0.9)
    assert [j.id for j in store.list_jobs(coll.id)] == [job.id]
    assert store.get_job("no-such-job") is None


def test_reap_stale_jobs_fails_jobs_whose_process_died(store: MetadataStore) -> None:
    coll = make_collection(store)
    finished = subprocess.Popen(["sleep", "0"])
    finished.wait()  # its pid is now free: the process is gone
    host = socket.gethostname()
    dead, alive, remote = (store.create_job(kind, coll.id) for kind in ("full", "add", "remove"))
    store.start_job(dead.id, pid=finished.pid, host=host)
    store.start_job(alive.id, pid=os.getpid(), host=host)
    store.start_job(remote.id, pid=finished.pid, host="another-host")  # only heartbeat counts

    assert store.reap_stale_jobs() == [dead.id]
    reaped = store.get_job(dead.id)
    assert reaped is not None
    assert (reaped.state, reaped.message) == ("failed", JOB_DIED_MESSAGE)
    assert reaped.finished_at is not None
    assert str(finished.pid) in reaped.errors[0]
    for job in (alive, remote):
        still = store.get_job(job.id)
        assert still is not None
        assert still.state == "running"

    time.sleep(0.05)
    # a silent job on another host is presumed dead; a live process on this host is only slow
    assert store.reap_stale_jobs(stale_after_s=0.01) == [remote.id]
    assert store.get_job(alive.id).state == "running"
    assert store.reap_stale_jobs() == []


def test_hash_group_key_is_stable_salted_and_never_the_key() -> None:
    key = "HAM_0000118"
    digest = hash_group_key(key, "salt-1")
    assert digest == hash_group_key(key, "salt-1")
    assert digest != key
    assert key not in digest
    assert len(digest) == 64
    assert digest != hash_group_key(key, "salt-2")
    assert digest != hashlib.sha256(key.encode()).hexdigest()
    with pytest.raises(ValueError, match="salt"):
        hash_group_key(key, "")
