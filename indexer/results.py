"""What a build did: the figures of one index job (its row in SQL, the command's summary)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BuildResult:
    job_id: str
    collection: str
    mode: str
    version: int
    vector_count: int
    added: int = 0
    updated: int = 0
    deleted: int = 0
    skipped_known: int = 0
    duplicates: int = 0
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    dropped_columns: list[str] = field(default_factory=list)  # not on the metadata allowlist
    skipped_files: dict[str, int] = field(default_factory=dict)  # Archive.skipped: reason → n
    seconds: float = 0.0
    images_per_s: float = 0.0
    factory: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def counts(self) -> dict[str, Any]:
        """The figures a job row and the command's summary show."""
        return {
            "version": self.version,
            "vectors": self.vector_count,
            "added": self.added,
            "updated": self.updated,
            "deleted": self.deleted,
            "skipped_known": self.skipped_known,
            "duplicates": self.duplicates,
            "conflicts": len(self.conflicts),
            "failed": len(self.failed),
            "dropped_columns": list(self.dropped_columns),  # names; how many: its length
            "skipped_files": dict(self.skipped_files),
        }
