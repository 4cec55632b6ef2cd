"""Admin jobs: reindex and case removal run as separate ``medret index`` processes.

The request only validates, records a queued job in SQL and starts the process, so it
answers at once; the build never shares the request workers, the event loop or the GIL
with queries. The process reports progress into the job's row (the same code path as
``medret index``); when it activates a new version, the registry's watcher loads it. If the
process dies before it could record its own failure, :meth:`JobLauncher.poll` marks the
job failed with the end of its log. The process is not killed when the service stops: a
build in flight finishes and the next start serves it.

The process gets only the environment it needs (:func:`job_environment`): the system's
basics and the thread, GPU and PostgreSQL-client knobs of the service's own environment,
and the ``MEDRET_*`` values ``medret index`` reads, taken from the settings — never the
admin token. The database URL travels there too, not in the arguments ``ps`` shows.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from app.settings import Settings
from dicomweb.errors import DicomwebError
from dicomweb.refs import is_dicomweb, parse_source
from dicomweb.settings import ENVIRONMENT_VARIABLES as DICOMWEB_VARIABLES
from indexer.group_keys import GENERATE_GROUP_SALT
from indexer.plan import ReindexMode, parse_reindex_mode
from indexer.sources import dicomweb_source_allowed
from indexer.store import JobInfo, JobState, MetadataStore, StoreError

log = logging.getLogger(__name__)

COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOG_TAIL_LINES = 5
# What a job inherits from the service's environment, by name and by prefix (PG: libpq's
# PGPASSWORD, PGSSLMODE, … for a database URL that relies on them).
INHERITED_VARIABLES: Final = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP"}
    | {"PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    | set(DICOMWEB_VARIABLES)  # how to reach the PACS (credentials, trust, timeouts)
)
INHERITED_PREFIXES: Final = (
    *("LC_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "TORCH_", "PYTORCH_"),
    *("CUDA_", "NVIDIA_", "PG"),
)


class JobRequestError(Exception):
    """A job request that cannot be started: a status code and a sentence."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Child:
    job_id: str
    collection: str
    process: subprocess.Popen[bytes]
    log_path: Path


class JobLauncher:
    def __init__(self, settings: Settings, store: MetadataStore) -> None:
        self.settings = settings
        self.store = store
        self.data_dir = settings.resolved_data_dir
        self.log_dir = self.data_dir / "jobs"
        self._children: dict[str, _Child] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ validation

    def _allowed_path(self, raw: str, what: str) -> Path:
        if not raw or "\x00" in raw:
            raise JobRequestError(400, f"{what} must be a path")
        path = Path(raw)
        if not path.is_absolute():
            raise JobRequestError(400, f"{what} must be an absolute path on the server")
        try:
            resolved = path.resolve()
            exists = resolved.exists()
        except (OSError, RuntimeError) as exc:  # a loop of links, a name too long, …
            raise JobRequestError(400, f"{what} {raw[:200]} cannot be used: {exc}") from None
        roots = self.settings.allowed_archive_roots
        if not any(resolved.is_relative_to(root) for root in roots):
            raise JobRequestError(
                403,
                f"{what} {raw} is outside the folders this service may read "
                f"(MEDRET_ARCHIVE_ROOTS: {', '.join(map(str, roots))})",
            )
        if not exists:
            raise JobRequestError(400, f"{what} {raw} does not exist on the server")
        return resolved

    def _allowed_source(self, raw: str) -> str:
        """A folder under MEDRET_ARCHIVE_ROOTS, or a DICOMweb source on MEDRET_DICOMWEB_URL's
        PACS (no other server: a reindex must not make the service fetch from anywhere)."""
        if not is_dicomweb(raw):
            return str(self._allowed_path(raw, "source"))
        try:
            parse_source(raw)
        except DicomwebError as exc:
            raise JobRequestError(400, str(exc)) from None
        if not dicomweb_source_allowed(raw, self.settings.dicomweb_url):
            configured = self.settings.dicomweb_url or "unset"
            raise JobRequestError(
                403,
                f"source {parse_source(raw).root} is not the PACS this service may read "
                f"(MEDRET_DICOMWEB_URL: {configured})",
            )
        return raw

    def _group_salt(self) -> str:
        """The salt a reindex job hashes with; 503 when the service has none."""
        if self.settings.group_salt is None:
            raise JobRequestError(
                503,
                "this service has no MEDRET_GROUP_SALT, which a reindex needs to hash the "
                "patient/lesion keys: set it to at least 32 random bytes (e.g. the output of "
                f"{GENERATE_GROUP_SALT}) and restart the service",
            )
        return self.settings.group_salt.get_secret_value()

    def _busy(self, collection_id: int) -> JobInfo | None:
        self.store.reap_stale_jobs()
        for job in self.store.list_jobs(collection_id):
            if job.state in (JobState.QUEUED, JobState.RUNNING):
                return job
        return None

    # ------------------------------------------------------------------ starting

    def start_reindex(
        self,
        collection: str,
        source: str,
        *,
        mode: str = "full",
        checkpoint: str | None = None,
        layout: str = "auto",
    ) -> JobInfo:
        salt = self._group_salt()
        if not COLLECTION_NAME.fullmatch(collection):
            raise JobRequestError(400, "a collection name is 1–64 letters, digits, '_', '.' or '-'")
        try:
            reindex = parse_reindex_mode(mode)
        except ValueError as exc:
            raise JobRequestError(400, str(exc)) from None
        source_arg = self._allowed_source(source)
        existing = {c.name: c for c in self.store.list_collections()}
        coll = existing.get(collection)
        if checkpoint is not None:
            checkpoint_path = self._allowed_path(checkpoint, "checkpoint")
        elif coll is not None:
            checkpoint_path = Path(coll.checkpoint_path)
        else:
            raise JobRequestError(
                400, f"collection {collection!r} does not exist yet; name a checkpoint to create it"
            )
        argv = [
            "--collection", collection,
            "--source", source_arg,
            "--checkpoint", str(checkpoint_path),
            "--layout", layout,
        ]  # fmt: skip
        if reindex is ReindexMode.ADD:
            argv.append("--add")
        with self._lock:
            if coll is None:  # the build creates the collection from the checkpoint
                coll_id = None
                for child in self._children.values():
                    if child.collection == collection and child.process.poll() is None:
                        raise JobRequestError(
                            409, f"job {child.job_id} is already creating {collection!r}"
                        )
            else:
                coll_id = coll.id
                busy = self._busy(coll.id)
                if busy is not None:
                    raise _busy_error(busy, collection)
                try:  # what the job would refuse: another salt than the collection's
                    self.store.check_group_salt(coll.id, salt, adding=reindex is ReindexMode.ADD)
                except StoreError as exc:
                    raise JobRequestError(409, str(exc)) from None
            job = self.store.create_job(reindex.value, coll_id)
            self._spawn(job, collection, argv)
        return job

    def start_removal(self, collection_id: int, collection: str, case_id: int) -> JobInfo:
        with self._lock:
            busy = self._busy(collection_id)
            if busy is not None:
                raise _busy_error(busy, collection)
            job = self.store.create_job("remove", collection_id)
            self._spawn(job, collection, ["--collection", collection, "--remove", str(case_id)])
        return job

    def _spawn(self, job: JobInfo, collection: str, argv: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{job.id}.log"
        command = [
            sys.executable, "-m", "medret", "index", *argv,
            "--job-id", job.id,
            "--data-dir", str(self.data_dir),
            "--workers", str(self.settings.index_workers),
            "--batch-size", str(self.settings.index_batch_size),
            "--device", self.settings.device,
        ]  # fmt: skip
        try:
            process = start_medret(command, self.settings, log_path)
        except OSError as exc:
            self.store.finish_job(job.id, state=JobState.FAILED, message=f"could not start: {exc}")
            raise JobRequestError(500, f"could not start the indexing process: {exc}") from exc
        self._children[job.id] = _Child(job.id, collection, process, log_path)
        log.info("job %s (%s) started as process %d", job.id, job.kind, process.pid)

    # ------------------------------------------------------------------ follow-up

    def poll(self) -> None:
        """Reap finished processes; fail their jobs if they could not say so themselves."""
        for job_id, child in list(self._children.items()):
            code = child.process.poll()
            if code is None or self._children.pop(job_id, None) is None:
                continue  # still running, or another thread reaped it
            job = self.store.get_job(job_id)
            if job is None or job.state in (JobState.SUCCEEDED, JobState.FAILED):
                continue
            reason = _last_lines(child.log_path) or f"the indexing process exited with {code}"
            try:
                self.store.finish_job(
                    job_id, state=JobState.FAILED, errors=[reason], message=reason
                )
            except StoreError:
                continue  # it finished meanwhile
            log.warning("job %s failed: %s", job_id, reason)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the processes this launcher started (tests and orderly shutdown)."""
        for child in list(self._children.values()):
            child.process.wait(timeout)
        self.poll()


def start_medret(
    command: list[str], settings: Settings, log_path: Path, *, append: bool = False
) -> subprocess.Popen[bytes]:
    """Start a ``medret`` process (an index job or a follower) with :func:`job_environment`,
    its output in ``log_path``, in a session of its own (the server's Ctrl-C is not its)."""
    with log_path.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=job_environment(settings, os.environ),
            start_new_session=True,
        )


def job_environment(settings: Settings, parent: Mapping[str, str]) -> dict[str, str]:
    """The environment of a job process: the variables of ``parent`` (the service's) named
    in :data:`INHERITED_VARIABLES` or :data:`INHERITED_PREFIXES`, and the ``MEDRET_*``
    values ``medret index`` reads, from ``settings``; nothing else (no admin token)."""
    env = {
        name: value
        for name, value in parent.items()
        if name in INHERITED_VARIABLES or name.startswith(INHERITED_PREFIXES)
    }
    env["MEDRET_DATABASE_URL"] = settings.resolved_database_url
    env["MEDRET_ARCHIVE_ROOTS"] = ",".join(map(str, settings.allowed_archive_roots))
    if settings.dicomweb_url:
        env["MEDRET_DICOMWEB_URL"] = settings.dicomweb_url
    if settings.metadata_allowlist:
        env["MEDRET_METADATA_ALLOWLIST"] = ",".join(settings.metadata_allowlist)
    if settings.group_salt is not None:
        env["MEDRET_GROUP_SALT"] = settings.group_salt.get_secret_value()
    env["TQDM_DISABLE"] = "1"
    return env


def _busy_error(busy: JobInfo, collection: str) -> JobRequestError:
    return JobRequestError(
        409, f"a {busy.kind} job ({busy.id}) is already {busy.state} for {collection!r}"
    )


def _last_lines(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    useful = [line for line in lines if line.strip() and "Traceback" not in line]
    return " | ".join(useful[-LOG_TAIL_LINES:])[-1000:]
