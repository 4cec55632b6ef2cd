"""The long-lived objects one app instance holds, built in its lifespan."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from app.followers import FollowerLauncher
from app.jobs import JobLauncher
from app.metrics import ServiceMetrics
from app.runtime import CollectionRegistry
from app.settings import Settings
from imaging.decode import DecodeLimits
from indexer.store import MetadataStore

P = ParamSpec("P")
R = TypeVar("R")

QUERY_THREADS = 8  # decoding and search of concurrent queries (the model has its own thread)


@dataclass
class Services:
    settings: Settings
    store: MetadataStore
    registry: CollectionRegistry
    launcher: JobLauncher
    followers: FollowerLauncher
    metrics: ServiceMetrics
    limits: DecodeLimits
    thumbnail_dir: Path
    workers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(QUERY_THREADS, thread_name_prefix="query")
    )

    async def run(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args)`` in the query thread pool, with this request's context (its id in
        the logs). A plain executor hop: cheaper than AnyIO's, which matters at ~10 ms
        per query."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.workers, call)
