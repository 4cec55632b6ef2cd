"""What an archive is: its samples, where each one's pixels are, and what was left out.

Skipped rows are counted, never fatal: a label row whose image file is absent (most of a
partially downloaded NIH set), a path that leaves the archive folder, or a row outside the
official split lists is left out and counted by reason in :attr:`Archive.skipped`;
label-table columns that are not on the metadata allowlist (:mod:`archives.privacy`) are
dropped and named in :attr:`Archive.dropped_columns`; :meth:`Archive.summary` reports
both. Malformed label files (missing columns, an ISIC row with two classes, an unknown
split name or finding) raise :class:`ArchiveError` naming the file and line.

An *empty* label cell makes a sample unlabelled (``labelled=False``), which
:meth:`Archive.targets` refuses; a labelled sample with the empty label tuple is "no
finding", whose multi-hot target is all zeros.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dicomweb.refs import InstanceRef
from labels import LabelSpace, Task

SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom"}
)

# Skip reasons (keys of Archive.skipped).
MISSING_IMAGE = "image file missing"
OUTSIDE_ROOT = "path outside the archive folder"
NOT_IN_SPLIT_LISTS = "not in train_val_list.txt or test_list.txt"
OUTSIDE_CLASS_FOLDER = "image outside a class folder"
NOT_IN_GROUND_TRUTH = "image without a ground-truth row"


class ArchiveError(ValueError):
    """A folder that cannot be read as any layout, or a malformed label file (says where)."""


@dataclass(frozen=True)
class ArrayRef:
    """One image inside an array of a ``.npz`` file."""

    file: Path
    array: str  # e.g. "train_images"
    index: int

    @property
    def uri(self) -> str:
        """``<file>#<array>[<index>]``: how the indexer records where a case's pixels are."""
        return f"{self.file}#{self.array}[{self.index}]"

    @classmethod
    def from_uri(cls, uri: str) -> ArrayRef | None:
        """The reference a :attr:`uri` names, or ``None`` if ``uri`` is not one."""
        match = _ARRAY_URI.match(uri)
        if match is None:
            return None
        return cls(Path(match["file"]), match["array"], int(match["index"]))


_ARRAY_URI = re.compile(r"^(?P<file>.+\.npz)#(?P<array>[A-Za-z0-9_]+)\[(?P<index>\d+)\]$")


@dataclass(frozen=True)
class Sample:
    """One image of an archive, its labels and where its pixels are."""

    key: str  # unique within the archive, stable across runs
    labels: tuple[str, ...]  # class codes; () = no finding, or unlabelled when labelled=False
    split: str  # "train" | "val" | "test" | "" (no split given)
    path: Path | None = None  # image/DICOM file to decode
    array: ArrayRef | None = None  # or pixels stored in an array file
    remote: InstanceRef | None = None  # or an instance of a DICOMweb server (a PACS)
    group: str | None = None  # patient / lesion id: no group is in two carved splits
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    labelled: bool = True


@dataclass(frozen=True)
class Archive:
    """The samples of one dataset folder, with its label space and what was left out."""

    root: Path | str  # the folder or file read, or a DICOMweb source (dicomweb+http://…)
    layout: str  # one of archives.registry.LAYOUTS, or "dicomweb"
    task: Task
    codes: tuple[str, ...]  # class codes in logit order
    names: tuple[str, ...]  # readable names, same order
    samples: tuple[Sample, ...]
    skipped: Mapping[str, int]  # reason → count
    dropped_columns: tuple[str, ...] = ()  # label-table columns not on the metadata allowlist

    def split(self, name: str) -> list[Sample]:
        """The samples of split `name` (``"train"``, ``"val"``, ``"test"`` or ``""``)."""
        if name not in (*SPLITS, ""):
            raise ValueError(f"unknown split {name!r}: choose one of {', '.join(SPLITS)} or ''")
        return [sample for sample in self.samples if sample.split == name]

    def label_space(self) -> LabelSpace:
        return LabelSpace(self.codes, self.names)

    def targets(self, samples: Sequence[Sample]) -> np.ndarray:
        """Single-label: int64 (N,) class indices; multi-label: float32 (N, C) multi-hot."""
        index = {code: i for i, code in enumerate(self.codes)}
        unlabelled = [sample.key for sample in samples if not sample.labelled]
        if unlabelled:
            raise ArchiveError(
                f"{len(unlabelled)} of the samples have no label (e.g. {unlabelled[0]!r}); "
                "keep only samples with labelled=True"
            )
        if self.task is Task.MULTI_LABEL:
            multi_hot = np.zeros((len(samples), len(self.codes)), dtype=np.float32)
            for row, sample in enumerate(samples):
                for code in sample.labels:
                    multi_hot[row, _code_index(index, code, sample)] = 1.0
            return multi_hot
        classes = np.empty(len(samples), dtype=np.int64)
        for row, sample in enumerate(samples):
            if len(sample.labels) != 1:
                raise ArchiveError(
                    f"sample {sample.key!r} has {len(sample.labels)} labels in a single-label "
                    "archive"
                )
            classes[row] = _code_index(index, sample.labels[0], sample)
        return classes

    def summary(self) -> str:
        """One paragraph: layout, task, counts per split and class, skipped with reasons."""
        task = self.task.phrase
        split_counts = Counter(sample.split for sample in self.samples)
        splits = ", ".join(
            f"{name or 'no split'} {split_counts[name]:,}"
            for name in (*SPLITS, "")
            if split_counts[name]
        )
        labelled = [sample for sample in self.samples if sample.labelled]
        class_counts = Counter(code for sample in labelled for code in sample.labels)
        parts = [
            f"{self.root}: {self.layout} layout, {task}, {len(self.codes)} classes; "
            f"{len(self.samples):,} samples ({splits})."
        ]
        if class_counts:
            names = dict(zip(self.codes, self.names, strict=True))
            per_class = ", ".join(
                f"{code}{'' if names[code] == code else f' ({names[code]})'} {count:,}"
                for code, count in class_counts.most_common()
            )
            noun = "Positives per class" if self.task is Task.MULTI_LABEL else "Per class"
            parts.append(f"{noun}: {per_class}.")
        no_finding = sum(1 for sample in labelled if not sample.labels)
        if no_finding and self.task is Task.MULTI_LABEL:
            parts.append(f"No finding: {no_finding:,}.")
        if len(labelled) < len(self.samples):
            parts.append(f"Unlabelled: {len(self.samples) - len(labelled):,}.")
        if self.skipped:
            reasons = "; ".join(f"{reason} {count:,}" for reason, count in self.skipped.items())
            parts.append(f"Skipped {sum(self.skipped.values()):,}: {reasons}.")
        else:
            parts.append("Nothing skipped.")
        if self.dropped_columns:
            parts.append(
                f"Not kept as metadata (not on the allowlist): {len(self.dropped_columns)} "
                f"columns, {', '.join(self.dropped_columns)}."
            )
        return " ".join(parts)


def _code_index(index: Mapping[str, int], code: str, sample: Sample) -> int:
    try:
        return index[code]
    except KeyError:
        raise ArchiveError(
            f"sample {sample.key!r} has label {code!r}, which is not one of the archive's "
            f"classes ({', '.join(index)})"
        ) from None
