"""The salt of a collection's hashed group keys: recorded as a fingerprint, another refused."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from indexer.group_keys import GroupSaltError, group_salt_fingerprint, hash_group_key
from indexer.store import MetadataStore, StoreError
from support.group_salt import OTHER_GROUP_SALT, TEST_GROUP_SALT
from support.store import add_cases, case_row, make_collection


def record(store: MetadataStore, collection_id: int, salt: str) -> None:
    with store.session() as session:
        store.record_group_salt(session, collection_id, salt)


def hashed_case(case_id: int, key: str, salt: str = TEST_GROUP_SALT):
    return case_row(case_id, key, group_key_hash=hash_group_key(f"patient-{case_id}", salt))


def test_the_first_salt_is_recorded_as_a_fingerprint_never_as_itself(
    store: MetadataStore,
) -> None:
    coll = make_collection(store)
    assert coll.group_salt_fingerprint is None
    store.check_group_salt(coll.id, TEST_GROUP_SALT, adding=False)  # a new one takes any
    record(store, coll.id, TEST_GROUP_SALT)
    stored = store.get_collection("derm").group_salt_fingerprint
    assert stored == group_salt_fingerprint(TEST_GROUP_SALT)
    with store.engine.connect() as conn:
        (row,) = conn.execute(text("SELECT * FROM collections")).all()
    assert TEST_GROUP_SALT not in repr(tuple(row))


def test_another_salt_is_refused_once_the_collection_holds_hashed_keys(
    store: MetadataStore,
) -> None:
    coll = make_collection(store)
    add_cases(store, coll.id, hashed_case(1, "a"))
    record(store, coll.id, TEST_GROUP_SALT)
    for adding in (False, True):
        store.check_group_salt(coll.id, TEST_GROUP_SALT, adding=adding)
        with pytest.raises(StoreError) as refused:
            store.check_group_salt(coll.id, OTHER_GROUP_SALT, adding=adding)
        message = str(refused.value)
        assert "collection 'derm' holds patient/lesion keys hashed with another" in message
        assert group_salt_fingerprint(TEST_GROUP_SALT)[:12] in message
        assert group_salt_fingerprint(OTHER_GROUP_SALT)[:12] in message
        assert OTHER_GROUP_SALT not in message
        assert TEST_GROUP_SALT not in message
    with pytest.raises(StoreError, match="another MEDRET_GROUP_SALT"):
        record(store, coll.id, OTHER_GROUP_SALT)  # the transaction that would write them
    assert store.get_collection("derm").group_salt_fingerprint == group_salt_fingerprint(
        TEST_GROUP_SALT
    )


def test_a_collection_without_hashed_keys_takes_a_new_salt(store: MetadataStore) -> None:
    coll = make_collection(store)
    add_cases(store, coll.id, case_row(1, "a"))  # no group: nothing was hashed
    record(store, coll.id, TEST_GROUP_SALT)
    store.check_group_salt(coll.id, OTHER_GROUP_SALT, adding=True)
    record(store, coll.id, OTHER_GROUP_SALT)
    stored = store.get_collection("derm").group_salt_fingerprint
    assert stored == group_salt_fingerprint(OTHER_GROUP_SALT)


def test_keys_hashed_before_any_fingerprint_need_a_full_reindex_first(
    store: MetadataStore,
) -> None:
    coll = make_collection(store)  # as a collection written before revision 0002
    add_cases(store, coll.id, hashed_case(1, "a", salt="medret"))
    with pytest.raises(StoreError, match="hashed before the salt was recorded; run a full"):
        store.check_group_salt(coll.id, TEST_GROUP_SALT, adding=True)
    store.check_group_salt(coll.id, TEST_GROUP_SALT, adding=False)  # a full build rehashes
    record(store, coll.id, TEST_GROUP_SALT)
    stored = store.get_collection("derm").group_salt_fingerprint
    assert stored == group_salt_fingerprint(TEST_GROUP_SALT)


def test_a_weak_salt_never_reaches_the_database(store: MetadataStore) -> None:
    coll = make_collection(store)
    with pytest.raises(GroupSaltError, match="MEDRET_GROUP_SALT is too short"):
        store.check_group_salt(coll.id, "medret", adding=False)
    with pytest.raises(GroupSaltError, match="MEDRET_GROUP_SALT is not set"):
        record(store, coll.id, "")
    assert store.get_collection("derm").group_salt_fingerprint is None
    with pytest.raises(StoreError, match="collection id 999 does not exist"):
        store.check_group_salt(999, TEST_GROUP_SALT, adding=False)
