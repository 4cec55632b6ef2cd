"""PACS followers the service starts and stops: ``medret follow`` processes, one per
collection (``POST/GET/DELETE /admin/follow``; docs/service.md).

A follower runs outside the request workers like any job (:mod:`app.jobs`), with the
same minimal environment (:func:`app.jobs.job_environment`) and its log in
``<data_dir>/followers/<collection>.log``. The source must be on ``MEDRET_DICOMWEB_URL``'s
PACS (:meth:`JobLauncher._allowed_source`). Stopping sends SIGTERM (the follower ends
after its current batch), waits, then SIGKILL, which is safe too: the cursor is stored
only after a batch's version is active. The service stops its followers when it stops.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from app.jobs import COLLECTION_NAME, JobLauncher, JobRequestError, start_medret
from dicomweb.refs import is_dicomweb

log = logging.getLogger(__name__)

STOP_GRACE_S = 10.0


@dataclass
class RunningFollower:
    collection: str
    source: str
    process: subprocess.Popen[bytes]
    log_path: Path
    since: dt.datetime

    @property
    def pid(self) -> int:
        return self.process.pid


class FollowerLauncher:
    """Starts, lists and stops this service's follower processes (module doc)."""

    def __init__(self, launcher: JobLauncher) -> None:
        self.launcher = launcher
        self.settings = launcher.settings
        self.log_dir = launcher.data_dir / "followers"
        self._running: dict[str, RunningFollower] = {}
        self._lock = threading.Lock()

    def start(
        self,
        collection: str,
        source: str,
        *,
        checkpoint: str | None = None,
        labels: str | None = None,
    ) -> RunningFollower:
        """Start following ``source`` into ``collection`` (:class:`JobRequestError` 400,
        403, 409 or 503 when it may not)."""
        if not COLLECTION_NAME.fullmatch(collection):
            raise JobRequestError(400, "a collection name is 1–64 letters, digits, '_', '.' or '-'")
        if not is_dicomweb(source):
            raise JobRequestError(
                400, "a follower's source is a DICOMweb server, dicomweb+http(s)://…"
            )
        source_arg = self.launcher._allowed_source(source)
        self.launcher._group_salt()
        argv = ["--collection", collection, "--source", source_arg]
        known = {c.name: c for c in self.launcher.store.list_collections()}
        if checkpoint is not None:
            argv += ["--checkpoint", str(self.launcher._allowed_path(checkpoint, "checkpoint"))]
        elif collection not in known:
            raise JobRequestError(
                400, f"collection {collection!r} does not exist yet; name a checkpoint to create it"
            )
        if labels is not None:
            argv += ["--labels", str(self.launcher._allowed_path(labels, "labels"))]
        with self._lock:
            self._reap()
            if collection in self._running:
                running = self._running[collection]
                raise JobRequestError(
                    409, f"a follower (process {running.pid}) already runs for {collection!r}"
                )
            follower = self._spawn(collection, source_arg, argv)
            self._running[collection] = follower
        return follower

    def _spawn(self, collection: str, source: str, argv: list[str]) -> RunningFollower:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{collection}.log"
        command = [
            sys.executable, "-m", "medret", "follow", *argv,
            "--data-dir", str(self.launcher.data_dir),
            "--workers", str(self.settings.index_workers),
            "--device", self.settings.device,
        ]  # fmt: skip
        try:
            process = start_medret(command, self.settings, log_path, append=True)
        except OSError as exc:
            raise JobRequestError(500, f"could not start the follower: {exc}") from exc
        log.info("follower of %s started as process %d", collection, process.pid)
        return RunningFollower(collection, source, process, log_path, dt.datetime.now(dt.UTC))

    def _reap(self) -> None:
        for name, follower in list(self._running.items()):
            code = follower.process.poll()
            if code is not None:
                del self._running[name]
                log.warning("follower of %s exited with %d (log %s)", name, code, follower.log_path)

    def running(self) -> list[RunningFollower]:
        """The followers alive now, by collection name."""
        with self._lock:
            self._reap()
            return sorted(self._running.values(), key=lambda f: f.collection)

    def stop(self, collection: str, *, grace_s: float = STOP_GRACE_S) -> bool:
        """Stop the collection's follower (SIGTERM, then SIGKILL after ``grace_s``);
        whether one was running."""
        with self._lock:  # held until it has exited: no second one starts meanwhile
            self._reap()
            follower = self._running.get(collection)
            if follower is None:
                return False
            _terminate(follower.process, grace_s)
            del self._running[collection]
        log.info("follower of %s stopped (exit %s)", collection, follower.process.returncode)
        return True

    def stop_all(self, *, grace_s: float = STOP_GRACE_S) -> None:
        """Stop every follower (the service's shutdown): SIGTERM to all, then wait."""
        with self._lock:
            followers = list(self._running.values())
            self._running.clear()
        for follower in followers:
            if follower.process.poll() is None:
                follower.process.send_signal(signal.SIGTERM)
        for follower in followers:
            _terminate(follower.process, grace_s)


def _terminate(process: subprocess.Popen[bytes], grace_s: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
