"""Decode every image once: a memory-mapped store of letterboxed uint8 canvases.

Layout, per canvas size, under the cache directory::

    <cache_dir>/<H>x<W>/pixels.u8    rows of 3·H·W bytes, appended, never rewritten
    <cache_dir>/<H>x<W>/index.json   {content SHA-256: row}

A row is :func:`model.preprocessing.fit_to_canvas` of the decoded image — exactly the
uint8 canvas the serving path computes before normalising — so training on cached
pixels is training on what the service will see. Keys are content hashes, so renamed or
duplicated files share a row, several archives share one store, and a changed file gets
a new row. Decoding runs in DataLoader worker processes. A row is only referenced from
the index after it has been written and flushed, so a killed build leaves a valid cache
(at worst some unreferenced bytes that the next build skips). One process builds at a
time (under DDP, rank 0; the others wait at a barrier).
"""

from __future__ import annotations

import hashlib
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

from model.archives import Sample, load_pixels
from model.decoding import ImageDecodeError
from model.preprocessing import fit_to_canvas

log = logging.getLogger(__name__)


def sample_bytes(sample: Sample) -> bytes:
    """The bytes that identify a sample's content: the file, or the array row."""
    if sample.path is not None:
        return sample.path.read_bytes()
    return np.ascontiguousarray(load_pixels(sample)).tobytes()


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


class _DecodeJobs(Dataset[tuple[int, str, np.ndarray | None, str]]):
    """Worker-side: hash each sample, and decode + letterbox the ones not cached yet."""

    def __init__(self, samples: Sequence[Sample], size: tuple[int, int], known: set[str]):
        self.samples = samples
        self.size = size
        self.known = known

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, str, np.ndarray | None, str]:
        sample = self.samples[i]
        try:
            data = sample_bytes(sample)
        except OSError as exc:
            return i, "", None, f"cannot read: {exc}"
        digest = hashlib.sha256(data).hexdigest()
        if digest in self.known:
            return i, digest, None, ""
        try:
            pixels = load_pixels(sample)
        except ImageDecodeError as exc:
            return i, digest, None, str(exc)
        return i, digest, fit_to_canvas(pixels, self.size).numpy(), ""


def _identity(item: Any) -> Any:
    """Worker results are single samples: no batching or tensor conversion wanted."""
    return item


class PixelCache:
    """The store for one canvas size; see the module docstring."""

    def __init__(self, cache_dir: str | Path, size: tuple[int, int]) -> None:
        self.size = size
        self.directory = Path(cache_dir) / f"{size[0]}x{size[1]}"
        self.pixels_path = self.directory / "pixels.u8"
        self.index_path = self.directory / "index.json"
        self.row_bytes = 3 * size[0] * size[1]
        self.index: dict[str, int] = {}
        if self.index_path.exists():
            self.index = json.loads(self.index_path.read_text())
        self._array: np.memmap | None = None

    def _save_index(self) -> None:
        tmp = self.index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.index))
        tmp.replace(self.index_path)

    def build(
        self, samples: Sequence[Sample], *, workers: int = 2, progress: bool = True
    ) -> tuple[np.ndarray, CacheReport]:
        """Make sure every sample is cached; returns each sample's row (−1: unreadable)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        rows = np.full(len(samples), -1, dtype=np.int64)
        report = CacheReport(total=len(samples))
        jobs = _DecodeJobs(samples, self.size, set(self.index))
        loader = DataLoader(
            jobs,
            batch_size=None,
            num_workers=workers,
            collate_fn=_identity,
            persistent_workers=False,
        )
        with self.pixels_path.open("ab") as out:
            next_row = out.tell() // self.row_bytes
            if out.tell() % self.row_bytes:  # a torn row from a killed build: skip past it
                out.truncate(next_row * self.row_bytes)
                out.seek(next_row * self.row_bytes)
            bar = tqdm(loader, total=len(jobs), desc="decoding", unit="img", disable=not progress)
            for count, (i, digest, canvas, error) in enumerate(bar, 1):
                if error:
                    report.failed.append((samples[i].key, error))
                elif canvas is None or digest in self.index:
                    rows[i] = self.index[digest]
                    report.reused += 1
                else:
                    out.write(np.ascontiguousarray(canvas, dtype=np.uint8).tobytes())
                    self.index[digest] = next_row
                    rows[i] = next_row
                    next_row += 1
                    report.decoded += 1
                if count % 2000 == 0:
                    out.flush()
                    os.fsync(out.fileno())
                    self._save_index()
            out.flush()
            os.fsync(out.fileno())
        self._save_index()
        self._array = None
        log.info("pixel cache %s: %s", self.directory, report.summary())
        return rows, report

    @property
    def array(self) -> np.memmap:
        """(rows, 3, H, W) uint8, read-only."""
        if self._array is None:
            count = self.pixels_path.stat().st_size // self.row_bytes
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
