"""Reading the label tables of an archive: CSV files with a header, columns found by name.

Every error is an :class:`~archives.records.ArchiveError` naming the table (``what``),
its path and, for a bad row, the line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from archives.records import ArchiveError


def read_csv(path: Path, what: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The stripped header of a CSV file and an iterator of (line number, row).

    Blank rows are ignored; a row with the wrong number of fields raises ArchiveError.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"cannot read {what} at {path}: {exc}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ArchiveError(f"{what} at {path} is not valid CSV: {exc}") from exc
    if header is None:
        raise ArchiveError(f"{what} at {path} is empty (no header row)")
    header = [name.strip() for name in header]

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise ArchiveError(
                        f"{what} at {path}, line {reader.line_num}: {len(row)} fields but the "
                        f"header has {len(header)}"
                    )
                yield reader.line_num, row
        except csv.Error as exc:
            raise ArchiveError(
                f"{what} at {path}, line {reader.line_num}: not valid CSV: {exc}"
            ) from exc

    return header, rows()


def find_column(header: Sequence[str], names: Sequence[str]) -> int | None:
    """Index of the first of `names` in `header` (case-insensitive), or None."""
    lowered = [column.lower() for column in header]
    for name in names:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    return None


def require_column(header: Sequence[str], names: Sequence[str], path: Path, what: str) -> int:
    """Index of the first of `names` in `header`; ArchiveError naming the columns if none."""
    column = find_column(header, names)
    if column is None:
        wanted = " or ".join(repr(name) for name in names)
        raise ArchiveError(
            f"{what} at {path} has no {wanted} column (columns: {', '.join(header)})"
        )
    return column


def read_name_list(path: Path) -> frozenset[str] | None:
    """The non-blank lines of a text file of names; None when there is no such file."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"cannot read {path}: {exc}") from exc
    return frozenset(line.strip() for line in text.splitlines() if line.strip())
