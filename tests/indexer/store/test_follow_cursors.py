"""Follow cursors: stored per (collection, source), replaced by an upsert, on both dialects."""

from __future__ import annotations

import threading

from indexer.store import MetadataStore
from indexer.store.cursors import get_cursor, set_cursor
from support.store import make_collection

SOURCE = "dicomweb+http://127.0.0.1:8042/dicom-web"
OTHER = "dicomweb+http://127.0.0.1:8043/dicom-web"


def test_a_cursor_is_none_until_set_then_replaced(store: MetadataStore) -> None:
    derm = make_collection(store).id
    assert store.get_cursor(derm, SOURCE) is None
    store.set_cursor(derm, SOURCE, "17")
    assert store.get_cursor(derm, SOURCE) == "17"
    store.set_cursor(derm, SOURCE, "42")
    assert store.get_cursor(derm, SOURCE) == "42"


def test_cursors_are_kept_apart_by_collection_and_source(store: MetadataStore) -> None:
    derm = make_collection(store).id
    chest = make_collection(store, "chest").id
    store.set_cursor(derm, SOURCE, "1")
    store.set_cursor(derm, OTHER, "2")
    store.set_cursor(chest, SOURCE, "3")
    pairs = [(derm, SOURCE), (derm, OTHER), (chest, SOURCE)]
    assert [store.get_cursor(c, s) for c, s in pairs] == ["1", "2", "3"]
    assert store.delete_cursor(derm, OTHER)
    assert not store.delete_cursor(derm, OTHER)
    assert store.get_cursor(derm, OTHER) is None
    assert store.get_cursor(derm, SOURCE) == "1"


def test_a_cursor_set_in_a_rolled_back_transaction_is_not_kept(store: MetadataStore) -> None:
    derm = make_collection(store).id
    store.set_cursor(derm, SOURCE, "5")
    try:
        with store.session() as session:
            set_cursor(session, derm, SOURCE, "9")
            assert get_cursor(session, derm, SOURCE) == "9"
            raise RuntimeError("the batch failed")
    except RuntimeError:
        pass
    assert store.get_cursor(derm, SOURCE) == "5"


def test_concurrent_upserts_leave_one_row_with_one_of_the_values(store: MetadataStore) -> None:
    derm = make_collection(store).id
    errors: list[BaseException] = []

    def write(value: str) -> None:
        try:
            for _ in range(5):
                store.set_cursor(derm, SOURCE, value)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(str(n),)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get_cursor(derm, SOURCE) in {"0", "1", "2", "3"}
