"""Case ids: reserved in disjoint ranges, even by concurrent callers."""

from __future__ import annotations

import threading

from indexer.store import MetadataStore


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
