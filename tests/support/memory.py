"""What a request costs a live server in memory: its peak RSS, reset between requests.

Linux keeps each process's peak resident memory (``VmHWM``); writing ``5`` to
``/proc/<pid>/clear_refs`` resets it to the current RSS, so the peak of one request (or of
a burst of them) is ``VmHWM`` after it minus ``VmRSS`` before it. Used by the decode
budget tests and by ``bench/decode_memory.py``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.archives import make_class_folders
from support.checkpoints import make_checkpoint
from support.service import ServiceEnv, build_collection


def _status_value(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def reset_peak_rss(pid: int) -> int:
    """Reset the peak RSS of `pid` to its current RSS, and return that RSS in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status_value(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """The peak RSS of `pid` (bytes) since it started or since :func:`reset_peak_rss`."""
    return _status_value(pid, "VmHWM")


def tiny_service(root: Path) -> ServiceEnv:
    """A served collection of 20 small generated images and a freshly initialised model."""
    archive_root = root / "archives"
    archive = make_class_folders(archive_root / "folders")
    checkpoint = make_checkpoint(root / "tiny.safetensors", ("benign", "malignant"))
    data_dir = root / "data"
    url = f"sqlite:///{root / 'medret.db'}"
    build_collection(url, data_dir, "tiny", checkpoint, archive)
    return ServiceEnv(data_dir, url, checkpoint, archive, archive_root)


@dataclass(frozen=True)
class Measured:
    statuses: tuple[int, ...]
    details: tuple[str, ...]
    seconds: float  # wall time of the whole burst
    peak_increase: int  # bytes of peak RSS above the RSS before the burst


def post_and_measure(url: str, pid: int, data: bytes, copies: int = 1) -> Measured:
    """POST `data` to /query `copies` times at once; statuses and the server's peak RSS."""

    def send(_: int) -> httpx.Response:
        files = {"file": ("upload", data, "application/octet-stream")}
        return httpx.post(f"{url}/query", files=files, timeout=120)

    time.sleep(0.3)  # let the previous request's memory go back
    before = reset_peak_rss(pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(copies) as pool:
        answers = list(pool.map(send, range(copies)))
    seconds = time.perf_counter() - started
    increase = peak_rss(pid) - before
    details = tuple(
        "" if a.status_code == 200 else str(a.json().get("detail", ""))[:120] for a in answers
    )
    return Measured(tuple(a.status_code for a in answers), details, seconds, increase)
