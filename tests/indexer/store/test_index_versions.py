"""Index versions: numbered, exactly one active, failed and pruned ones kept apart."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from indexer.store import IndexVersion, MetadataStore, StoreError, VersionState
from support.store import SHA_A, make_collection


def test_exactly_one_active_version_and_rollback_keeps_the_previous(store: MetadataStore) -> None:
    coll = make_collection(store)
    assert store.next_version_number(coll.id) == 1
    assert store.active_version(coll.id) is None

    def build(n: int) -> int:
        version = store.create_version(
            coll.id, path=f"/idx/v{n}", checkpoint_sha256=SHA_A, factory="Flat", params={"n": n}
        )
        assert (version.version, version.state, version.is_active) == (
            n,
            VersionState.BUILDING,
            False,
        )
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
        VersionState.READY,
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
    assert states == {
        1: (VersionState.READY, False),
        2: (VersionState.READY, True),
        3: (VersionState.BUILDING, False),
    }

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
    assert states == {
        1: (VersionState.PRUNED, False),
        2: (VersionState.READY, True),
        3: (VersionState.FAILED, False),
    }
    assert store.list_versions(coll.id)[2].message == "disk full"
    assert store.next_version_number(coll.id) == 4
