"""Decode every image once: a memory-mapped store of letterboxed uint8 canvases.

Layout, per canvas size and cache format, under the cache directory::

    <cache_dir>/<H>x<W>-<CACHE_FORMAT>/pixels.u8   rows of 3·H·W bytes, append-only
    <cache_dir>/<H>x<W>-<CACHE_FORMAT>/index.json  {content SHA-256: row}
    <cache_dir>/<H>x<W>-<CACHE_FORMAT>/build.lock  flock-ed by the process that builds

A row is :func:`imaging.preprocessing.fit_to_canvas` of the decoded image — exactly the
uint8 canvas the serving path computes before normalising — so training on cached
pixels is training on what the service will see. Keys are content hashes, so renamed or
duplicated files share a row, several archives share one store, and a changed file gets
a new row. Each file is read once: the bytes that are hashed are the bytes that are
decoded (:func:`imaging.decode.decode_image`); an array sample's key is the hash of its
shape and pixels, and its canvas is made from those same pixels. Hashing and decoding run
in DataLoader worker processes.

**Versioning.** The directory name holds :data:`CACHE_FORMAT`. Rows are looked up by the
hash of the *input*, so nothing notices when the code that turns an input into a canvas
changes: bump :data:`CACHE_FORMAT` whenever :mod:`imaging` (what pixels a file
gives) or :func:`imaging.preprocessing.fit_to_canvas` (the letterbox: geometry,
interpolation, padding) changes, or this file's row layout changes. Old directories are
then simply no longer used (delete them to reclaim the space).

**Concurrency.** Any number of processes may build the same store at once (two
``medret evaluate`` runs, an ablation next to training): :meth:`PixelCache.build` holds an
exclusive ``fcntl.flock`` on ``build.lock`` for the whole build, and only once it holds
the lock re-reads ``index.json`` and counts rows from the current size of ``pixels.u8``
(truncating a torn partial row left by a killed build). So a second builder waits, then
finds the first one's rows and decodes only what is still missing. The index is replaced
atomically (:func:`files.atomic.atomic_write_text`: a unique temporary file in the same
directory, fsync, rename), so a reader sees either the old or the new index, never a
partial one.
Readers (:meth:`PixelCache.lookup`, :attr:`PixelCache.array`) take no lock: rows are
append-only, and the index refers to a row only after the row has been written, flushed
and fsynced. A killed build therefore leaves a valid cache: at worst unreferenced rows at
the end, which are never read, and a partial row, which the next build cuts off. A
missing or unreadable ``index.json`` is treated as empty, with a warning: the images are
decoded again and appended. (The lock
is a local-file lock; on NFS Linux emulates ``flock`` with POSIX locks, other network
file systems may not lock at all.) Under DDP, rank 0 builds and the other ranks, after a
barrier, only :meth:`~PixelCache.lookup` their rows: they hash but never decode or write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from archives.canvas import prepare_sample
from archives.records import Sample
from files.atomic import atomic_write_text
from imaging.decode import DEFAULT_LIMITS, DecodeLimits

log = logging.getLogger(__name__)

# Part of the store's directory name. Bump it whenever decoding (imaging/decode.py,
# imaging/raster.py, imaging/dicom/) or the letterbox (imaging.preprocessing.fit_to_canvas)
# changes, so that no canvas made by the old code is reused: see the module docstring.
CACHE_FORMAT = "v1"

NOT_CACHED = "not in the pixel cache"
INDEX_FILE = "index.json"
PIXELS_FILE = "pixels.u8"
LOCK_FILE = "build.lock"


@dataclass
class CacheReport:
    total: int = 0
    decoded: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sample key, reason)

    def summary(self) -> str:
        text = (
            f"{self.total} images: {self.reused} from the cache, {self.decoded} decoded, "
            f"{len(self.failed)} unreadable"
        )
        if self.failed:
            shown = "; ".join(f"{k}: {r}" for k, r in self.failed[:5])
            text += f" ({shown}{' …' if len(self.failed) > 5 else ''})"
        return text


# (sample index, content digest or "", canvas or None, error or "")
_JobResult = tuple[int, str, np.ndarray | None, str]


class _Jobs(Dataset[_JobResult]):
    """Worker-side: hash each sample and (if `decode`) letterbox the ones not cached yet."""

    def __init__(
        self,
        samples: Sequence[Sample],
        size: tuple[int, int],
        known: set[str],
        limits: DecodeLimits,
        *,
        decode: bool,
    ) -> None:
        self.samples = samples
        self.size = size
        self.known = known
        self.limits = limits
        self.decode = decode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> _JobResult:
        done = prepare_sample(
            self.samples[i], self.size, self.limits, skip=self.known, decode=self.decode
        )
        canvas = None if done.canvas is None else done.canvas.numpy()
        return i, done.content_hash, canvas, done.error


def _identity(item: Any) -> Any:
    """Worker results are single samples: no batching or tensor conversion wanted."""
    return item


class PixelCache:
    """The store for one canvas size; see the module docstring."""

    def __init__(
        self,
        cache_dir: str | Path,
        size: tuple[int, int],
        *,
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.size = size
        self.limits = limits
        self.directory = Path(cache_dir) / f"{size[0]}x{size[1]}-{CACHE_FORMAT}"
        self.pixels_path = self.directory / PIXELS_FILE
        self.index_path = self.directory / INDEX_FILE
        self.lock_path = self.directory / LOCK_FILE
        self.row_bytes = 3 * size[0] * size[1]
        self.index: dict[str, int] = self._read_index()
        self._array: np.memmap | None = None

    # ------------------------------------------------------------------ index

    def _complete_rows(self) -> int:
        try:
            return self.pixels_path.stat().st_size // self.row_bytes
        except FileNotFoundError:
            return 0

    def _read_index(self) -> dict[str, int]:
        """The index on disk; empty (with a warning) when it is missing or unreadable.

        Entries pointing past the complete rows of ``pixels.u8`` (a pixels file deleted or
        cut short by hand) are dropped, so a row this returns can always be read.
        """
        try:
            text = self.index_path.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            log.warning(
                "pixel cache %s: cannot read %s (%s); treating it as empty, "
                "images will be decoded again",
                self.directory,
                INDEX_FILE,
                exc,
            )
            return {}
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raw = exc
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in raw.items()
        ):
            why = raw if isinstance(raw, json.JSONDecodeError) else "not a {hash: row} object"
            log.warning(
                "pixel cache %s: %s is corrupt (%s); treating it as empty, images "
                "will be decoded again",
                self.directory,
                INDEX_FILE,
                why,
            )
            return {}
        rows = self._complete_rows()  # read after the index: it covers every row it names
        index = {digest: row for digest, row in raw.items() if row < rows}
        if len(index) < len(raw):
            log.warning(
                "pixel cache %s: %d index entries point past the end of %s; dropped",
                self.directory,
                len(raw) - len(index),
                PIXELS_FILE,
            )
        return index

    def _save_index(self) -> None:
        """Replace ``index.json`` with the index, atomically."""
        atomic_write_text(self.index_path, json.dumps(self.index))

    @contextlib.contextmanager
    def _build_lock(self) -> Iterator[None]:
        """Hold the store's exclusive build lock (waits for another builder to finish)."""
        with self.lock_path.open("a+b") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("pixel cache %s: another process is building it; waiting", self.directory)
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _loader(self, jobs: _Jobs, workers: int) -> DataLoader[_JobResult]:
        return DataLoader(
            jobs,
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
            persistent_workers=False,
        )

    # ------------------------------------------------------------------ build / lookup

    def build(
        self, samples: Sequence[Sample], *, workers: int = 2, progress: bool = True
    ) -> tuple[np.ndarray, CacheReport]:
        """Make sure every sample is cached; returns each sample's row (−1: unreadable)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        rows = np.full(len(samples), -1, dtype=np.int64)
        report = CacheReport(total=len(samples))
        with self._build_lock(), self.pixels_path.open("ab") as out:
            # Only now, under the lock, is the state on disk final: another builder may
            # have added rows (and index entries) since this object was made.
            self.index = self._read_index()
            size = os.fstat(out.fileno()).st_size
            next_row = size // self.row_bytes
            if size % self.row_bytes:  # a torn row from a killed build: cut it off
                log.warning(
                    "pixel cache %s: dropping a partial row (%d bytes) left by an "
                    "interrupted build",
                    self.directory,
                    size % self.row_bytes,
                )
                out.truncate(next_row * self.row_bytes)  # "ab": writes still go to the end
            jobs = _Jobs(samples, self.size, set(self.index), self.limits, decode=True)
            bar = tqdm(
                self._loader(jobs, workers),
                total=len(jobs),
                desc="decoding",
                unit="img",
                disable=not progress,
            )
            for count, (i, digest, canvas, error) in enumerate(bar, 1):
                if error:
                    report.failed.append((samples[i].key, error))
                elif digest in self.index:  # cached before, or a duplicate in this build
                    rows[i] = self.index[digest]
                    report.reused += 1
                else:
                    assert canvas is not None
                    if canvas.shape != (3, *self.size) or canvas.dtype != np.uint8:
                        raise RuntimeError(f"canvas of shape {canvas.shape} {canvas.dtype}")
                    out.write(np.ascontiguousarray(canvas).tobytes())
                    self.index[digest] = next_row
                    rows[i] = next_row
                    next_row += 1
                    report.decoded += 1
                if count % 2000 == 0 and report.decoded:
                    out.flush()
                    os.fsync(out.fileno())
                    self._save_index()
            out.flush()
            os.fsync(out.fileno())
            self._save_index()  # still under the lock: the next builder sees every row
        self._array = None
        log.info("pixel cache %s: %s", self.directory, report.summary())
        return rows, report

    def lookup(
        self, samples: Sequence[Sample], *, workers: int = 0, progress: bool = False
    ) -> tuple[np.ndarray, CacheReport]:
        """Each sample's row in the store as it is on disk now, without decoding or writing.

        Samples are hashed (in `workers` processes) and looked up in ``index.json``; a
        sample that cannot be read, or is not cached (:data:`NOT_CACHED`, e.g. because the
        builder could not decode it), gets row −1 and is listed in ``report.failed``.
        Takes no lock and creates nothing, not even the directory.
        """
        self.index = self._read_index()
        self._array = None  # the file may have grown since it was mapped
        rows = np.full(len(samples), -1, dtype=np.int64)
        report = CacheReport(total=len(samples))
        jobs = _Jobs(samples, self.size, set(), self.limits, decode=False)
        bar = tqdm(
            self._loader(jobs, workers),
            total=len(jobs),
            desc="hashing",
            unit="img",
            disable=not progress,
        )
        for i, digest, _, error in bar:
            if error:
                report.failed.append((samples[i].key, error))
            elif digest in self.index:
                rows[i] = self.index[digest]
                report.reused += 1
            else:
                report.failed.append((samples[i].key, NOT_CACHED))
        log.info("pixel cache %s (lookup): %s", self.directory, report.summary())
        return rows, report

    # ------------------------------------------------------------------ reading

    @property
    def array(self) -> np.memmap:
        """(rows, 3, H, W) uint8, read-only."""
        if self._array is None:
            count = self._complete_rows()
            self._array = np.memmap(
                self.pixels_path, dtype=np.uint8, mode="r", shape=(count, 3, *self.size)
            )
        return self._array

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 (B, 3, H, W) for the given rows (a copy, safe to move to a device)."""
        return torch.from_numpy(np.ascontiguousarray(self.array[np.asarray(rows)]))


def iterate_rows(rows: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), batch_size):
        yield rows[start : start + batch_size]
