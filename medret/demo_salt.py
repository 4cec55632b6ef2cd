"""The demo's salt of the hashed patient/lesion keys: ``MEDRET_GROUP_SALT``, or its own.

Indexing refuses to run without a secret salt (:mod:`indexer.group_keys`); the demo makes
one on its first run instead, keeps it in ``<data-dir>/demo/group-salt`` (mode 0600) and
reuses it, so its collection keeps one salt across runs. ``bench/load.py`` keeps one in
its work folder the same way.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Final

from commandline.errors import CommandError
from files.atomic import fsync_directory, fsync_file, temporary_path

GROUP_SALT_FILE: Final = "group-salt"  # in <data-dir>/demo


def demo_group_salt(demo_dir: Path) -> str:
    """``MEDRET_GROUP_SALT`` when set, else the salt stored in ``demo_dir`` (made now if
    there is none); a weak or unreadable one is a :class:`CommandError`."""
    from indexer.group_keys import (
        GroupSaltError,
        checked_group_salt,
        generate_group_salt,
        group_salt_from_environment,
    )

    if given := group_salt_from_environment():
        try:
            return checked_group_salt(given)
        except GroupSaltError as exc:
            raise CommandError(f"{exc}; or unset it to use the demo's own salt") from None
    path = demo_dir / GROUP_SALT_FILE
    try:
        if not path.exists():
            create_private_file(path, generate_group_salt() + "\n")
        return checked_group_salt(path.read_text().strip())
    except (OSError, GroupSaltError) as exc:
        raise CommandError(f"the salt stored in {path} cannot be used: {exc}") from None


def create_private_file(path: Path, text: str) -> None:
    """A new file holding ``text``, readable by its owner only, that appears complete or not
    at all; if another process made it first, theirs is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_path(path)  # mkstemp's mode: 0600
    try:
        temp.write_text(text)
        fsync_file(temp)
        with contextlib.suppress(FileExistsError):  # another process made it first
            os.link(temp, path)  # unlike a rename, never replaces an existing file
    finally:
        temp.unlink(missing_ok=True)
    fsync_directory(path.parent)
