"""Atomic file replacement: a reader sees the old file or the new one, never a partial one.

Every writer in the project that replaces a file in place (checkpoints, training state,
the pixel cache's index, FAISS files and their sidecars, OOD caches, thumbnails) goes
through this module, so they all give the same guarantees:

1. the new content is written to a temporary file with a unique name *in the same folder*
   (so the final rename never crosses a filesystem);
2. the temporary file is flushed and ``fsync``-ed, and given the permissions an ordinary
   ``open()`` would have (``0o666`` less the umask; ``mkstemp`` makes it ``0o600``);
3. it is moved over the target with ``os.replace`` (atomic on POSIX);
4. the folder is ``fsync``-ed, so the rename itself survives a power cut;
5. on any failure the temporary file is removed and the target is left untouched.

:func:`atomic_paths` replaces several files together, in the order given (for example an
index before the sidecar that names its hash).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal, cast, overload

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames, new files); a no-op where the filesystem refuses."""
    try:
        fsync_file(folder)
    except OSError:  # some filesystems refuse fsync on directories; the data is synced
        log.debug("could not fsync directory %s", folder)


def temporary_path(target: str | os.PathLike[str]) -> Path:
    """A new, empty file with a unique hidden name beside ``target`` (``.name.XXXX.tmp``)."""
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_paths(*targets: str | os.PathLike[str]) -> Iterator[tuple[Path, ...]]:
    """Temporary paths for ``targets``; on a clean exit each replaces its target, in order.

    Write each temporary path with any library (``safetensors.save_file``, ``torch.save``,
    ``faiss.write_index``, …). Parent folders are created. If the block raises, every
    temporary file is removed and no target changes.
    """
    finals = [Path(t) for t in targets]
    temps: list[Path] = []
    try:
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            temps.append(temporary_path(final))
        yield tuple(temps)
        mode = 0o666 & ~current_umask()
        for temp in temps:
            temp.chmod(mode)
            fsync_file(temp)
        for temp, final in zip(temps, finals, strict=True):
            temp.replace(final)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise
    for folder in dict.fromkeys(final.parent for final in finals):
        fsync_directory(folder)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """One temporary path that replaces ``target`` on a clean exit (see :func:`atomic_paths`)."""
    with atomic_paths(target) as (temp,):
        yield temp


@overload
def atomic_writer(
    target: str | os.PathLike[str], mode: Literal["wb"] = "wb"
) -> contextlib.AbstractContextManager[IO[bytes]]: ...
@overload
def atomic_writer(
    target: str | os.PathLike[str], mode: Literal["w"]
) -> contextlib.AbstractContextManager[IO[str]]: ...
def atomic_writer(
    target: str | os.PathLike[str], mode: Literal["wb", "w"] = "wb"
) -> contextlib.AbstractContextManager[IO[bytes]] | contextlib.AbstractContextManager[IO[str]]:
    """An open file (binary ``"wb"`` or UTF-8 text ``"w"``) that replaces ``target`` on close."""
    writer = _atomic_writer(target, mode)
    if mode == "w":
        return cast(contextlib.AbstractContextManager[IO[str]], writer)
    return cast(contextlib.AbstractContextManager[IO[bytes]], writer)


@contextlib.contextmanager
def _atomic_writer(target: str | os.PathLike[str], mode: str) -> Iterator[IO[bytes] | IO[str]]:
    with atomic_path(target) as temp:
        encoding = None if "b" in mode else "utf-8"
        with temp.open(mode, encoding=encoding) as handle:
            yield handle


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``target`` with ``data``, atomically."""
    with atomic_writer(target, "wb") as handle:
        handle.write(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    """Replace ``target`` with UTF-8 ``text``, atomically."""
    with atomic_writer(target, "w") as handle:
        handle.write(text)
