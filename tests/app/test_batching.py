"""The micro-batcher: concurrent submissions share calls, in order, and failures reach
every waiting request."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from app.batching import BatcherClosedError, MicroBatcher
from app.main import create_app
from support.service import ServiceEnv


class Recorder:
    def __init__(self, delay_s: float = 0.02) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)  # a model forward holds its thread
        return [i * 10 for i in items]


def test_concurrent_submissions_share_a_batch_in_order() -> None:
    run = Recorder()

    async def main() -> list[int]:
        batcher = MicroBatcher(run, max_batch=8, max_wait_s=0.01)
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        finally:
            await batcher.aclose()

    results = asyncio.run(main())
    assert results == [i * 10 for i in range(20)]
    assert max(len(b) for b in run.batches) == 8  # never above the maximum
    assert len(run.batches) <= 4  # 20 requests, batches of up to 8
    assert sorted(i for b in run.batches for i in b) == list(range(20))
    assert run.threads
    assert all(name.startswith("batch-") for name in run.threads)


def test_a_lone_request_waits_at_most_max_wait() -> None:
    run = Recorder(delay_s=0)

    async def main() -> float:
        batcher = MicroBatcher(run, max_batch=16, max_wait_s=0.05)
        started = time.perf_counter()
        await batcher.submit(1)
        elapsed = time.perf_counter() - started
        await batcher.aclose()
        return elapsed

    assert asyncio.run(main()) < 1.0  # generous bound: the wait is 50 ms, not forever
    assert run.batches == [[1]]


def test_the_event_loop_stays_free_while_a_batch_runs() -> None:
    run = Recorder(delay_s=0.3)

    async def main() -> int:
        batcher = MicroBatcher(run, max_batch=4, max_wait_s=0)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await batcher.submit(1)
        ticker.cancel()
        await batcher.aclose()
        return ticks

    assert asyncio.run(main()) >= 10  # the loop ran while the "model" held its thread


def test_an_error_reaches_every_request_of_the_batch() -> None:
    def broken(items: Sequence[int]) -> list[int]:
        raise RuntimeError("device lost")

    async def main() -> list[object]:
        batcher = MicroBatcher(broken, max_batch=4, max_wait_s=0.02)
        try:
            return await asyncio.gather(
                *(batcher.submit(i) for i in range(3)), return_exceptions=True
            )
        finally:
            await batcher.aclose()

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) and "device lost" in str(r) for r in results)


def test_close_finishes_queued_work_then_refuses() -> None:
    run = Recorder(delay_s=0.05)

    async def main() -> tuple[list[int], BaseException | None]:
        batcher = MicroBatcher(run, max_batch=2, max_wait_s=0)
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        await batcher.aclose()
        done = [await p for p in pending]
        try:
            await batcher.submit(9)
        except BatcherClosedError as exc:
            return done, exc
        return done, None

    done, refusal = asyncio.run(main())
    assert done == [0, 10, 20, 30, 40]
    assert refusal is not None


def test_concurrent_queries_are_embedded_together(
    service_env: ServiceEnv, ham_image: bytes
) -> None:
    settings = service_env.settings(batch_max=8, batch_wait_ms=100)
    with TestClient(create_app(settings)) as client:

        def one() -> int:
            return client.post("/query", files={"file": ("q", ham_image)}).status_code

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = client.get("/metrics").text
    count = _metric(metrics, "medret_embed_batch_size_count")
    total = _metric(metrics, "medret_embed_batch_size_sum")
    assert total == 6  # every query was embedded once
    assert count < 6  # … in fewer forwards than queries


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    pytest.fail(f"{name} not in the metrics")
