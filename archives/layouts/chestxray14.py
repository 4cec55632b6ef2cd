"""The ``chestxray14`` layout: the NIH ChestX-ray14 distribution.

``Data_Entry_2017.csv``, images in any ``images*`` folder (searched recursively, so both
``images/`` and ``images_001/images/`` work) and the official
``train_val_list.txt``/``test_list.txt``. Multi-label over the 14 findings, ``No Finding``
being the empty label tuple; the group is the ``Patient ID``. A label row whose image is
absent (most of a partially downloaded set) or that is in neither split list is skipped and
counted; val is carved from train_val by patient (and test too, without the lists).
Metadata: the columns on the metadata allowlist (:func:`~archives.privacy.metadata_columns`),
the NIH ones renamed ``age``, ``sex`` and ``view_position``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from archives.label_sets import NIH_FINDINGS, NIH_NAMES, NO_FINDING
from archives.privacy import metadata_columns
from archives.records import MISSING_IMAGE, NOT_IN_SPLIT_LISTS, Archive, ArchiveError, Sample
from archives.scanning import scan_images, subfolders
from archives.splits import Carver, group_of, with_carved_splits
from archives.tables import read_csv, read_name_list, require_column
from labels import Task

logger = logging.getLogger(__name__)

NAME = "chestxray14"
LOOKS_FOR = "Data_Entry_2017.csv"
FILE_KIND = ""

_LABELS_FILE = "Data_Entry_2017.csv"
_METADATA_KEYS = {"Patient Age": "age", "Patient Gender": "sex", "View Position": "view_position"}


def detect(root: Path) -> bool:
    return (root / _LABELS_FILE).is_file()


def read(root: Path, carve: Carver) -> Archive:
    labels_path = root / _LABELS_FILE
    if not labels_path.is_file():
        raise ArchiveError(
            f"no {_LABELS_FILE} in {root}: the chestxray14 layout needs the NIH label file "
            "and images in images*/ folders"
        )
    present = _image_files(root)
    test_list = read_name_list(root / "test_list.txt")
    train_val_list = read_name_list(root / "train_val_list.txt")
    if test_list is None and train_val_list is None:
        logger.warning(
            "%s has neither train_val_list.txt nor test_list.txt: carving splits by patient",
            root,
        )

    what = _LABELS_FILE
    header, rows = read_csv(labels_path, what)
    image_column = require_column(header, ("Image Index",), labels_path, what)
    finding_column = require_column(header, ("Finding Labels",), labels_path, what)
    patient_column = require_column(header, ("Patient ID",), labels_path, what)
    metadata = metadata_columns(
        header, used={image_column, finding_column, patient_column}, keys=_METADATA_KEYS
    )
    known = set(NIH_FINDINGS)
    order = {code: i for i, code in enumerate(NIH_FINDINGS)}
    skipped: Counter[str] = Counter()
    samples: list[Sample] = []
    for line, row in rows:
        name = row[image_column].strip()
        path = present.get(name)
        if path is None:
            skipped[MISSING_IMAGE] += 1
            continue
        if test_list is not None and name in test_list:
            split = "test"
        elif train_val_list is None or name in train_val_list:
            split = "train"  # val (and test, without lists) carved below, by patient
        else:
            skipped[NOT_IN_SPLIT_LISTS] += 1
            continue
        findings = tuple(part.strip() for part in row[finding_column].split("|") if part.strip())
        if findings == (NO_FINDING,):
            findings = ()
        unknown = [finding for finding in findings if finding not in known]
        if unknown:
            raise ArchiveError(
                f"{what} at {labels_path}, line {line}: unknown finding "
                f"{', '.join(map(repr, unknown))} (known: {NO_FINDING}, {', '.join(NIH_FINDINGS)})"
            )
        samples.append(
            Sample(
                key=name,
                labels=tuple(sorted(set(findings), key=order.__getitem__)),
                split=split,
                path=path,
                group=row[patient_column].strip() or None,
                metadata=metadata.values(row),
            )
        )
    groups = [group_of(sample) for sample in samples if sample.split == "train"]
    if test_list is None and train_val_list is None:
        assign = carve.train_val_test(groups)
    else:
        assign = carve.train_val(groups)
    samples = with_carved_splits(samples, assign, from_split="train")
    names = tuple(NIH_NAMES[code] for code in NIH_FINDINGS)
    return Archive(
        root,
        NAME,
        Task.MULTI_LABEL,
        NIH_FINDINGS,
        names,
        tuple(samples),
        dict(skipped),
        metadata.dropped,
    )


def _image_files(root: Path) -> dict[str, Path]:
    """File name → path for every image under the root's ``images*`` folders (one scan)."""
    files: dict[str, Path] = {}
    for folder in subfolders(root):
        if folder.name.lower().startswith("images"):
            for path in scan_images(folder):
                if files.setdefault(path.name, path) != path:
                    logger.warning("%s: %s is also at %s; using the first", root, path.name, path)
    return files
