"""The ``manifest`` layout: a folder with ``labels.csv`` (``file,label[,split][,more columns]``).

``file`` is relative to the folder or to its ``images/`` subfolder and may name any image
or DICOM file. A manifest is multi-label if and only if some label cell holds ``|``; then
``No Finding`` is the empty label tuple. A group column keeps a patient's images in one
carved split and is stored only as a salted hash: ``group``, else the coarsest of the
patient-like then lesion-like columns (:data:`_GROUP_COLUMNS`, names matched as
:func:`~archives.privacy.normalise` writes them). Without a ``split`` column the splits
are carved. Extra columns become metadata only if they are on the metadata allowlist
(:func:`~archives.privacy.metadata_columns`); the others are dropped and named.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from archives.label_sets import NO_FINDING, ordered_label_space
from archives.privacy import metadata_columns, normalise
from archives.records import MISSING_IMAGE, OUTSIDE_ROOT, Archive, ArchiveError, Sample
from archives.splits import Carver, group_of, normalise_split, with_carved_splits
from archives.tables import find_column, read_csv, require_column
from labels import Task

NAME = "manifest"
LOOKS_FOR = "labels.csv"
FILE_KIND = ""

_LABELS_FILE = "labels.csv"
_FILE_COLUMNS = ("file", "path", "filename", "image")
_LABEL_COLUMNS = ("label", "labels")
# Normalised names of group columns, the one chosen first: an explicit group, then the
# patient-like ones, then the lesion-like ones (a patient may have several lesions).
_GROUP_COLUMNS = (
    *("group", "patientid", "patient", "subjectid", "subject", "participantid"),
    *("participant", "personid", "lesionid", "lesion"),
)


def detect(root: Path) -> bool:
    return (root / _LABELS_FILE).is_file()


@dataclass(frozen=True)
class _ManifestRow:
    line: int
    key: str
    path: Path
    label: str
    split: str
    group: str | None
    metadata: Mapping[str, str]


def read(root: Path, carve: Carver) -> Archive:
    labels_path = root / _LABELS_FILE
    if not labels_path.is_file():
        raise ArchiveError(
            f"no labels.csv in {root}: the manifest layout needs labels.csv with the columns "
            "file,label[,split,…]"
        )
    header, rows = read_csv(labels_path, "labels.csv")
    file_column = require_column(header, _FILE_COLUMNS, labels_path, "labels.csv")
    label_column = require_column(header, _LABEL_COLUMNS, labels_path, "labels.csv")
    split_column = find_column(header, ("split",))
    group_column = _group_column(header)
    metadata = metadata_columns(
        header, used={file_column, label_column, split_column, group_column}
    )

    skipped: Counter[str] = Counter()
    first_line: dict[str, int] = {}
    kept: list[_ManifestRow] = []
    for line, row in rows:
        where = f"labels.csv at {labels_path}, line {line}"
        key = row[file_column].strip()
        if not key:
            raise ArchiveError(f"{where}: the {header[file_column]!r} cell is empty")
        if key in first_line:
            raise ArchiveError(
                f"{where}: {key!r} is listed again (first on line {first_line[key]})"
            )
        first_line[key] = line
        relative = PurePosixPath(key.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts:
            skipped[OUTSIDE_ROOT] += 1
            continue
        path = _manifest_file(root, relative)
        if path is None:
            skipped[MISSING_IMAGE] += 1
            continue
        split = "" if split_column is None else normalise_split(row[split_column], where)
        group = None if group_column is None else (row[group_column].strip() or None)
        values = metadata.values(row)
        kept.append(_ManifestRow(line, key, path, row[label_column], split, group, values))

    task = Task.MULTI_LABEL if any("|" in row.label for row in kept) else Task.SINGLE_LABEL
    samples = [_manifest_sample(row, task) for row in kept]
    codes, names = ordered_label_space({code for sample in samples for code in sample.labels})
    if split_column is None:
        assign = carve.train_val_test([group_of(sample) for sample in samples])
        samples = with_carved_splits(samples, assign, from_split="")
    return Archive(root, NAME, task, codes, names, tuple(samples), dict(skipped), metadata.dropped)


def _group_column(header: list[str]) -> int | None:
    """The index of the group column (the first of :data:`_GROUP_COLUMNS`), or None."""
    normalised = [normalise(name) for name in header]
    for name in _GROUP_COLUMNS:
        if name in normalised:
            return normalised.index(name)
    return None


def _manifest_file(root: Path, relative: PurePosixPath) -> Path | None:
    """The file a manifest row names: relative to the folder, or to its images/ folder."""
    for base in (root, root / "images"):
        candidate = base.joinpath(*relative.parts)
        if candidate.is_file():
            return candidate
    return None


def _manifest_sample(row: _ManifestRow, task: Task) -> Sample:
    cell = row.label.strip()
    labelled = bool(cell)
    labels = tuple(dict.fromkeys(part.strip() for part in cell.split("|") if part.strip()))
    if task is Task.MULTI_LABEL and labels == (NO_FINDING,):
        labels = ()
    elif labelled and task is Task.MULTI_LABEL and NO_FINDING in labels:
        raise ArchiveError(f"labels.csv line {row.line}: {NO_FINDING!r} with other findings")
    return Sample(
        key=row.key,
        labels=labels,
        split=row.split,
        path=row.path,
        group=row.group,
        metadata=row.metadata,
        labelled=labelled,
    )
