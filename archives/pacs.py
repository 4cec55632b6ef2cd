"""A PACS as an archive: the instances a DICOMweb server lists, labelled from a CSV or not.

:func:`read_dicomweb_archive` lists the instances of a source (QIDO-RS, page by page,
with the source's query keys) and makes one :class:`~archives.records.Sample` per
instance, keyed by its SOPInstanceUID and pointing at it (``Sample.remote``); the pixels
are retrieved only when the sample is read (:mod:`archives.content`).

A PACS holds no diagnoses. Without a label table every sample is unlabelled; with one
(``--labels``), its rows are joined to the instances by the first UID column it has —
``SOPInstanceUID``, ``SeriesInstanceUID`` or ``StudyInstanceUID`` (or ``instance_uid``,
``series_uid``, ``study_uid``) — each instance taking the row of its own UID, else of its
series, else of its study. The label column is ``label`` (one label per image) or
``labels`` (several, separated by ``|``; "No Finding" or an empty cell in a labelled row
is no finding). An optional ``split`` column gives the split; other columns become
metadata only if the allowlist (:mod:`archives.privacy`) keeps them. Rows that match no
instance are counted as skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from archives.privacy import metadata_columns
from archives.records import Archive, ArchiveError, Sample
from archives.splits import normalise_split
from archives.tables import find_column, read_csv
from dicomweb.client import list_instances
from dicomweb.refs import InstanceRef, parse_source
from labels import Task

LAYOUT = "dicomweb"
NOT_IN_PACS = "label row without an instance in the PACS"
NO_FINDING = frozenset({"no finding", "no_finding", "none"})
_KEY_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("instance", ("SOPInstanceUID", "sop_instance_uid", "instance_uid", "sop_uid")),
    ("series", ("SeriesInstanceUID", "series_instance_uid", "series_uid")),
    ("study", ("StudyInstanceUID", "study_instance_uid", "study_uid")),
)


@dataclass(frozen=True)
class LabelRow:
    labels: tuple[str, ...]
    split: str
    metadata: dict[str, str]


@dataclass(frozen=True)
class LabelTable:
    """A label table keyed by one UID level (``instance``, ``series`` or ``study``)."""

    level: str
    task: Task
    rows: dict[str, LabelRow]
    dropped_columns: tuple[str, ...]

    def row_for(self, ref: InstanceRef) -> tuple[str, LabelRow] | None:
        uid = {"instance": ref.sop, "series": ref.series, "study": ref.study}[self.level]
        row = self.rows.get(uid)
        return None if row is None else (uid, row)


def read_dicomweb_archive(source: str, labels: Path | None = None) -> Archive:
    """The archive of a DICOMweb ``source`` (see the module docstring).

    Raises :class:`~dicomweb.errors.SourceError` for a malformed source,
    :class:`~dicomweb.errors.PacsUnavailableError` or
    :class:`~dicomweb.errors.PacsRefusedError` when the server cannot list, and
    :class:`ArchiveError` for a bad label table or a source that lists nothing.
    """
    parsed = parse_source(source)
    table = read_label_table(labels) if labels is not None else None
    refs = list_instances(parsed)
    if not refs:
        query = f" matching {parsed.text.partition('?')[2]}" if parsed.query else ""
        raise ArchiveError(f"{parsed.root} lists no instances{query}")
    return instances_archive(parsed.text, refs, table)


def instances_archive(
    source: str, refs: Sequence[InstanceRef], table: LabelTable | None = None
) -> Archive:
    """The archive of the instances ``refs`` of ``source``, labelled from ``table``: what a
    full listing gives, and what the PACS follower makes of the instances that arrived."""
    samples: list[Sample] = []
    used: set[str] = set()
    for ref in refs:
        match = table.row_for(ref) if table is not None else None
        if match is None:
            samples.append(Sample(key=ref.sop, labels=(), split="", remote=ref, labelled=False))
            continue
        uid, row = match
        used.add(uid)
        samples.append(
            Sample(
                key=ref.sop, labels=row.labels, split=row.split, remote=ref, metadata=row.metadata
            )
        )
    task = table.task if table is not None else Task.SINGLE_LABEL
    codes = tuple(sorted({code for sample in samples for code in sample.labels}))
    unused = len(table.rows) - len(used) if table is not None else 0
    return Archive(
        source,
        LAYOUT,
        task,
        codes,
        codes,
        tuple(samples),
        {NOT_IN_PACS: unused} if unused else {},
        dropped_columns=table.dropped_columns if table is not None else (),
    )


def read_label_table(path: Path) -> LabelTable:
    """The label table at ``path`` (columns as in the module docstring)."""
    what = "DICOMweb label table"
    header, rows = read_csv(path, what)
    level, key_column = _key_column(header, path)
    single = find_column(header, ["label"])
    multi = find_column(header, ["labels"])
    if single is not None and multi is not None:
        raise ArchiveError(f"{what} at {path} has both a 'label' and a 'labels' column")
    if single is not None:
        task, label_column = Task.SINGLE_LABEL, single
    elif multi is not None:
        task, label_column = Task.MULTI_LABEL, multi
    else:
        raise ArchiveError(
            f"{what} at {path} needs a label column: 'label' (one per image) or 'labels' "
            f"(several, separated by |); columns: {', '.join(header)}"
        )
    split_column = find_column(header, ["split"])
    kept = metadata_columns(header, used=[key_column, label_column, split_column])
    table: dict[str, LabelRow] = {}
    for line, row in rows:
        uid = row[key_column].strip()
        where = f"{what} at {path}, line {line}"
        if not uid:
            raise ArchiveError(f"{where}: empty {header[key_column]}")
        if uid in table:
            raise ArchiveError(f"{where}: {header[key_column]} {uid} appears twice")
        cell = row[label_column].strip()
        labels = _labels(cell, task, where)
        split = normalise_split(row[split_column], where) if split_column is not None else ""
        if split_column is not None and not row[split_column].strip():
            split = ""
        table[uid] = LabelRow(labels, split, kept.values(row))
    return LabelTable(level, task, table, kept.dropped)


def _key_column(header: Sequence[str], path: Path) -> tuple[str, int]:
    for level, names in _KEY_COLUMNS:
        column = find_column(header, names)
        if column is not None:
            return level, column
    raise ArchiveError(
        f"DICOMweb label table at {path} has no SOPInstanceUID, SeriesInstanceUID or "
        f"StudyInstanceUID column (columns: {', '.join(header)})"
    )


def _labels(cell: str, task: Task, where: str) -> tuple[str, ...]:
    if task is Task.SINGLE_LABEL:
        if not cell or "|" in cell:
            raise ArchiveError(f"{where}: the 'label' column needs exactly one label, got {cell!r}")
        return (cell,)
    codes = tuple(code.strip() for code in cell.split("|") if code.strip())
    if any(code.lower() in NO_FINDING for code in codes):
        if len(codes) > 1:
            raise ArchiveError(f"{where}: 'No Finding' together with findings: {cell!r}")
        return ()
    return codes
