"""What the steps of ``medret demo`` share: the dataset they work on, their one-line
announcements, durations as a person reads them, and the small JSON files they keep."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from files.atomic import atomic_write_text

if TYPE_CHECKING:
    from archives.records import Archive

STEPS = 4


@dataclass(frozen=True)
class DemoData:
    path: Path
    layout: str
    archive: Archive
    fingerprint: str
    synthetic: bool


def say(step: int, message: str) -> None:
    print(f"medret demo [{step}/{STEPS}] {message}", flush=True)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 90:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes / 60:.1f} h"


def as_json(data: dict[str, Any]) -> Any:
    """``data`` as it reads back from a JSON file (tuples become lists)."""
    return json.loads(json.dumps(data))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
