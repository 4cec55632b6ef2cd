"""Train/val/test splits: the names an archive may use, and carving splits by group.

Splits never separate a group. A sample's group is the patient (ChestX-ray14
``Patient ID``, a manifest's ``patient_id``) or the lesion (HAM10000 ``lesion_id``); a
sample without one is its own group. Where the archive gives no split (no validation
folder, no split column, no split folders), whole groups are carved off by a
:class:`Carver`: the groups are ordered by a hash of ``(seed, group)`` and taken in that
order until the split holds its fraction of the *samples* (at least one group, and never
the last group). The same seed and the same files give the same split on every machine and
run, and adding images moves few groups. Carved layouts get test 10 % and val
``val_fraction``; the rest is train. Splits given by the archive are used as they are; a
group found in two of them is logged as a warning (it would leak between training and
evaluation), not corrected.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from archives.records import Archive, ArchiveError, Sample

logger = logging.getLogger(__name__)

# Carved splits (when the archive gives none): this share of the samples goes to test.
CARVED_TEST_FRACTION = 0.1

# What a split column or a split folder may say, lower-cased → the split.
SPLIT_ALIASES: Mapping[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def normalise_split(value: str, where: str) -> str:
    """The split a cell names (see :data:`SPLIT_ALIASES`); ArchiveError saying `where` if none."""
    split = SPLIT_ALIASES.get(value.strip().lower())
    if split is None:
        raise ArchiveError(
            f"{where}: unknown split {value!r} (use train/training, val/valid/validation or test)"
        )
    return split


@dataclass(frozen=True)
class Carver:
    """Assigns whole groups to splits, deterministically from the seed."""

    val_fraction: float
    seed: int

    def splits(self, groups: Sequence[str], fractions: Mapping[str, float]) -> dict[str, str]:
        """Group → split for `groups` (one entry per sample); the remainder is train.

        Groups in hash order fill each split of `fractions` in turn until it holds its
        share of the samples; a split with a positive share gets at least one group, and
        the last group always stays in train.
        """
        sizes = Counter(groups)
        order = sorted(sizes, key=lambda group: (self._rank(group), group))
        total = sum(sizes.values())
        assignment: dict[str, str] = {}
        position = 0
        for split, fraction in fractions.items():
            target = max(1, round(fraction * total)) if fraction > 0 else 0
            taken = 0
            while taken < target and position < len(order) - 1:
                group = order[position]
                assignment[group] = split
                taken += sizes[group]
                position += 1
        for group in order[position:]:
            assignment[group] = "train"
        return assignment

    def train_val_test(self, groups: Sequence[str]) -> dict[str, str]:
        return self.splits(groups, {"test": CARVED_TEST_FRACTION, "val": self.val_fraction})

    def train_val(self, groups: Sequence[str]) -> dict[str, str]:
        return self.splits(groups, {"val": self.val_fraction})

    def _rank(self, group: str) -> int:
        digest = hashlib.blake2b(f"{self.seed}\0{group}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big")


def group_of(sample: Sample) -> str:
    """The sample's group for carving: its group, or the sample alone."""
    return sample.group if sample.group is not None else f"\0{sample.key}"


def with_carved_splits(
    samples: Sequence[Sample], assign: Mapping[str, str], from_split: str
) -> list[Sample]:
    """`samples` with those of `from_split` moved to their group's split in `assign`."""
    return [
        _replace_split(sample, assign[group_of(sample)]) if sample.split == from_split else sample
        for sample in samples
    ]


def _replace_split(sample: Sample, split: str) -> Sample:
    return Sample(
        key=sample.key,
        labels=sample.labels,
        split=split,
        path=sample.path,
        array=sample.array,
        group=sample.group,
        metadata=sample.metadata,
        labelled=sample.labelled,
    )


def warn_on_groups_in_several_splits(archive: Archive) -> None:
    """Log the groups that the archive's own splits put in more than one split."""
    splits_of: dict[str, set[str]] = {}
    for sample in archive.samples:
        if sample.group is not None and sample.split:
            splits_of.setdefault(sample.group, set()).add(sample.split)
    leaking = sorted(group for group, splits in splits_of.items() if len(splits) > 1)
    if leaking:
        logger.warning(
            "%s: %d groups (patients/lesions) have samples in more than one split, e.g. %s; "
            "the split given by the archive leaks between training and evaluation",
            archive.root,
            len(leaking),
            ", ".join(leaking[:5]),
        )
