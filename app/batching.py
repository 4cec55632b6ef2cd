"""Micro-batching: concurrent queries share one model forward.

Requests put their input in a queue and await a future. One worker task takes the first
waiting item, then whatever else arrives within ``max_wait_s`` (up to ``max_batch``),
and runs the batch function in its own thread, so the event loop keeps accepting
requests. While a batch runs, new requests queue up and form the next batch: under load
the batch size grows by itself, and a lone request waits at most ``max_wait_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class BatcherClosedError(RuntimeError):
    """The batcher was closed (the model it serves was replaced or the app stops)."""


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[In, Out]):
    """Gathers ``submit`` calls into calls of ``run_batch(items) -> outputs`` (same order)."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[In]], Sequence[Out]],
        *,
        max_batch: int = 16,
        max_wait_s: float = 0.002,
        name: str = "model",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending[In, Out]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._closed = False
        self._busy = False

    async def submit(self, item: In) -> Out:
        """The output for ``item``, computed in a batch with whatever else is waiting."""
        if self._closed:
            raise BatcherClosedError("the model is being replaced; retry")
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work(self._queue))
        pending: _Pending[In, Out] = _Pending(item, loop.create_future())
        await self._queue.put(pending)
        return await pending.future

    async def _gather(self, queue: asyncio.Queue[_Pending[In, Out]]) -> list[_Pending[In, Out]]:
        batch = [await queue.get()]
        self._busy = True  # from here on, aclose waits for this batch
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), timeout=left))
            except TimeoutError:
                break
        return batch

    async def _work(self, queue: asyncio.Queue[_Pending[In, Out]]) -> None:
        while True:
            batch = await self._gather(queue)
            try:
                await self._run(batch)
            finally:
                self._busy = False

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        loop = asyncio.get_running_loop()
        live = [p for p in batch if not p.future.done()]  # skip requests that gave up
        if live:
            items = [p.item for p in live]
            context = contextvars.copy_context()
            try:
                outputs = await loop.run_in_executor(
                    self._executor, context.run, self._run_batch, items
                )
                if len(outputs) != len(live):
                    raise RuntimeError(f"batch of {len(live)} gave {len(outputs)} outputs")
            except Exception as exc:  # every waiting request learns why
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(exc)
                return
            if self._on_batch is not None:
                self._on_batch(len(live))
            for p, out in zip(live, outputs, strict=True):
                if not p.future.done():
                    p.future.set_result(out)

    async def aclose(self) -> None:
        """Finish what is queued, then stop; later submits raise :class:`BatcherClosedError`."""
        self._closed = True
        while self._worker is not None and not self._worker.done():
            if (self._queue is None or self._queue.empty()) and not self._busy:
                break
            await asyncio.sleep(0.005)
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        if self._queue is not None:
            while not self._queue.empty():
                p = self._queue.get_nowait()
                if not p.future.done():
                    p.future.set_exception(BatcherClosedError("the service is stopping"))
        self._executor.shutdown(wait=True)
