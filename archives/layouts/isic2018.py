"""The ``isic2018`` layout: the ISIC 2018 Task 3 distribution.

``ISIC2018_Task3_{Training,Validation,Test}_Input`` folders and their
``…_GroundTruth/…_GroundTruth.csv`` one-hot files, plus an optional
``HAM10000_metadata.csv`` that gives each image its lesion (the group) and the metadata
of its allowlisted columns (``dx``, ``dx_type``, ``age``, ``sex``, ``localization``:
:func:`~archives.privacy.metadata_columns`). An input folder without ground
truth gives unlabelled samples (``labelled=False``) of that split. Single-label, in the
published class order; without a validation part, val is carved from training by lesion.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from archives.label_sets import ISIC_CODES, ISIC_NAMES
from archives.privacy import metadata_columns
from archives.records import MISSING_IMAGE, NOT_IN_GROUND_TRUTH, Archive, ArchiveError, Sample
from archives.scanning import is_skipped_name, scan_images
from archives.splits import Carver, group_of, with_carved_splits
from archives.tables import read_csv, require_column
from labels import Task

logger = logging.getLogger(__name__)

NAME = "isic2018"
LOOKS_FOR = "ISIC2018_Task3_Training_Input/GroundTruth folders"
FILE_KIND = ""

_PARTS = (("Training", "train"), ("Validation", "val"), ("Test", "test"))
_HAM_METADATA_FILE = "HAM10000_metadata.csv"


def detect(root: Path) -> bool:
    return (
        _input_dir(root, "Training").is_dir()
        or (root / "ISIC2018_Task3_Training_GroundTruth").is_dir()
    )


def _input_dir(root: Path, part: str) -> Path:
    return root / f"ISIC2018_Task3_{part}_Input"


def _ground_truth(root: Path, part: str) -> Path | None:
    """The part's ground-truth CSV: its official name, or the one CSV in the folder."""
    folder = root / f"ISIC2018_Task3_{part}_GroundTruth"
    official = folder / f"ISIC2018_Task3_{part}_GroundTruth.csv"
    if official.is_file():
        return official
    if not folder.is_dir():
        return None
    csvs = sorted(path for path in folder.glob("*.csv") if not is_skipped_name(path.name))
    if len(csvs) > 1:
        raise ArchiveError(
            f"{folder} holds several CSV files ({', '.join(p.name for p in csvs)}) and none is "
            f"named {official.name}"
        )
    return csvs[0] if csvs else None


def read(root: Path, carve: Carver) -> Archive:
    training_csv = _ground_truth(root, "Training")
    if training_csv is None or not _input_dir(root, "Training").is_dir():
        raise ArchiveError(
            f"{root} is not an ISIC 2018 Task 3 folder: it needs ISIC2018_Task3_Training_Input/ "
            "and ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv"
        )
    ham, dropped_columns = _read_ham_metadata(root / _HAM_METADATA_FILE)
    skipped: Counter[str] = Counter()
    samples: list[Sample] = []
    for part, split in _PARTS:
        input_dir = _input_dir(root, part)
        images = _images_by_stem(input_dir) if input_dir.is_dir() else {}
        csv_path = training_csv if part == "Training" else _ground_truth(root, part)
        if csv_path is None:
            if images:
                logger.info("%s has no ground truth: its images are unlabelled", input_dir)
            labels: dict[str, str | None] = dict.fromkeys(images)
        else:
            labels = {image_id: code for image_id, code in _read_ground_truth(csv_path)}
        for image_id, label in labels.items():
            path = images.get(image_id)
            if path is None:
                skipped[MISSING_IMAGE] += 1
                continue
            group, metadata = ham.get(image_id, (None, {}))
            samples.append(
                Sample(
                    key=image_id,
                    labels=() if label is None else (label,),
                    split=split,
                    path=path,
                    group=group,
                    metadata=metadata,
                    labelled=label is not None,
                )
            )
        unlisted = len(images.keys() - labels.keys())
        if unlisted:
            skipped[NOT_IN_GROUND_TRUTH] += unlisted
    _check_unique_keys(samples, root)
    _warn_on_ham_dx_mismatch(root, samples, ham)
    if not _input_dir(root, "Validation").is_dir() and _ground_truth(root, "Validation") is None:
        assign = carve.train_val([group_of(s) for s in samples if s.split == "train"])
        samples = with_carved_splits(samples, assign, from_split="train")
    names = tuple(ISIC_NAMES[code] for code in ISIC_CODES)
    return Archive(
        root,
        NAME,
        Task.SINGLE_LABEL,
        ISIC_CODES,
        names,
        tuple(samples),
        dict(skipped),
        dropped_columns,
    )


def _images_by_stem(folder: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in scan_images(folder):
        images.setdefault(path.stem, path)
    return images


def _read_ground_truth(path: Path) -> Iterator[tuple[str, str]]:
    """(image id, class code) per row of a one-hot ISIC 2018 Task 3 ground-truth CSV."""
    what = "ISIC ground truth"
    header, rows = read_csv(path, what)
    image_column = require_column(header, ("image",), path, what)
    code_columns = [require_column(header, (code,), path, what) for code in ISIC_CODES]
    for line, row in rows:
        where = f"{what} at {path}, line {line}"
        try:
            values = [float(row[column]) for column in code_columns]
        except ValueError:
            cells = ", ".join(row[column] for column in code_columns)
            raise ArchiveError(f"{where}: class cells must be numbers, got {cells}") from None
        positives = [code for code, value in zip(ISIC_CODES, values, strict=True) if value == 1.0]
        if len(positives) != 1 or any(value not in (0.0, 1.0) for value in values):
            marked = ", ".join(positives) or "none"
            raise ArchiveError(
                f"{where}: image {row[image_column].strip()!r} must have exactly one class "
                f"marked 1.0 and the others 0.0 (marked: {marked})"
            )
        yield row[image_column].strip(), positives[0]


def _read_ham_metadata(
    path: Path,
) -> tuple[dict[str, tuple[str | None, dict[str, str]]], tuple[str, ...]]:
    """image id → (lesion id, metadata) from HAM10000_metadata.csv, and the names of its
    columns not kept as metadata; ({}, ()) when it is absent."""
    if not path.is_file():
        return {}, ()
    what = _HAM_METADATA_FILE
    header, rows = read_csv(path, what)
    image_column = require_column(header, ("image_id",), path, what)
    lesion_column = require_column(header, ("lesion_id",), path, what)
    metadata = metadata_columns(header, used={image_column, lesion_column})
    joined: dict[str, tuple[str | None, dict[str, str]]] = {}
    for _line, row in rows:
        lesion = row[lesion_column].strip() or None
        joined[row[image_column].strip()] = (lesion, metadata.values(row))
    return joined, metadata.dropped


def _warn_on_ham_dx_mismatch(
    root: Path, samples: Sequence[Sample], ham: Mapping[str, tuple[str | None, dict[str, str]]]
) -> None:
    """Log when HAM10000_metadata.csv's dx disagrees with the ground truth (a wrong join)."""
    mismatched = [
        sample.key
        for sample in samples
        if sample.labels
        and sample.key in ham
        and ham[sample.key][1].get("dx", sample.labels[0]).upper() != sample.labels[0]
    ]
    if mismatched:
        logger.warning(
            "%s: %d images have a HAM10000 dx that differs from their ground truth, e.g. %s",
            root,
            len(mismatched),
            mismatched[0],
        )


def _check_unique_keys(samples: Sequence[Sample], root: Path) -> None:
    counts = Counter(sample.key for sample in samples)
    repeated = [key for key, count in counts.items() if count > 1]
    if repeated:
        raise ArchiveError(
            f"{root}: {len(repeated)} images appear in more than one part, e.g. {repeated[0]!r}"
        )
