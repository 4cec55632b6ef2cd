"""Cases: added, read, found, updated and deleted; duplicates and identifiers refused."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event

from indexer.store import CaseRow, MetadataStore, StoreError
from support.store import SHA_B, add_cases, case_row, content_hash, make_collection


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
    # only the asked-for ids that are cases of this collection
    other = make_collection(store, "other")
    add_cases(store, other.id, case_row(store.reserve_ids(1)[0], "c"))
    assert sorted(store.external_ids(coll.id, ["b", "c", "zz", "b"])) == ["b"]
    assert store.external_ids(coll.id, []) == []
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
