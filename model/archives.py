"""Readers for the dataset layouts: a folder on disk → an :class:`Archive` of :class:`Sample`.

Both ``training/`` (datasets, splits, targets) and ``indexer/`` (what to embed) read archives
through this module, which is why it lives in ``model/``. It needs only the standard library,
numpy and Pillow (through :mod:`model.decoding`); it does not import torch.

Layouts (:data:`LAYOUTS`), in the order :func:`detect_layout` tries them:

``isic2018``
    The ISIC 2018 Task 3 distribution: ``ISIC2018_Task3_{Training,Validation,Test}_Input``
    folders and their ``…_GroundTruth/…_GroundTruth.csv`` one-hot files, plus an optional
    ``HAM10000_metadata.csv`` that gives each image its lesion (the group) and
    ``dx_type``/``age``/``sex``/``localization`` metadata. An input folder without ground
    truth gives unlabelled samples (``labelled=False``) of that split.
``chestxray14``
    The NIH ChestX-ray14 distribution: ``Data_Entry_2017.csv``, images in any ``images*``
    folder (searched recursively, so both ``images/`` and ``images_001/images/`` work) and
    the official ``train_val_list.txt``/``test_list.txt``.
``manifest``
    A folder with ``labels.csv`` (``file,label[,split][,more columns]``); ``file`` is relative
    to the folder or to its ``images/`` subfolder and may name any image or DICOM file.
``medmnist``
    A MedMNIST v2 ``.npz`` (``train_images``, ``train_labels``, ``val_*``, ``test_*``); the
    samples point into the arrays (:class:`ArrayRef`) instead of at files.
``class_folders``
    ``root/<class>/…`` or ``root/<split>/<class>/…`` (split folders train/val/test).
``image_folder``
    Any folder of images without labels (what the indexer embeds): every sample unlabelled,
    split ``""``. Detected only when nothing else matches; a folder whose sub-folders
    hold images is detected as ``class_folders``, so the indexer names this layout.

Decisions:

* **Splits never separate a group.** A sample's group is the patient (ChestX-ray14
  ``Patient ID``, a manifest's ``patient_id``) or the lesion (HAM10000 ``lesion_id``); a
  sample without one is its own group. Where the archive gives no split (no validation
  folder, no split column, no split folders), whole groups are carved off: the groups are
  ordered by a hash of ``(seed, group)`` and taken in that order until the split holds its
  fraction of the *samples* (at least one group, and never the last group). The same seed
  and the same files give the same split on every machine and run, and adding images moves
  few groups. Carved layouts get test 10 % and val ``val_fraction``; the rest is train.
  Splits given by the archive are used as they are; a group found in two of them is logged
  as a warning (it would leak between training and evaluation), not corrected.
* **No Finding.** ChestX-ray14's ``No Finding`` (and a multi-label manifest's) is the empty
  label tuple: a labelled sample whose multi-hot target is all zeros. An *empty* label cell
  is different: the sample is unlabelled (``labelled=False``) and :meth:`Archive.targets`
  refuses it.
* **Task.** ISIC and MedMNIST with one label column are single-label; ChestX-ray14 and
  MedMNIST with several binary columns are multi-label; a manifest is multi-label if and
  only if some label cell holds ``|``.
* **Class order** is the published order for known label sets (ISIC 2018: MEL, NV, BCC,
  AKIEC, BKL, DF, VASC; the 14 ChestX-ray14 findings), also when a manifest or class
  folders use those codes (only the codes present, in that order); otherwise sorted codes.
* **Skipped rows are counted, never fatal.** A label row whose image file is absent (most
  of a partially downloaded NIH set), a path that leaves the archive folder, or a row
  outside the official split lists is left out and counted by reason in
  :attr:`Archive.skipped`; :meth:`Archive.summary` reports them. Present files are found
  by scanning the image folders once into a set of names, not by one ``stat`` per row.
  Malformed label files (missing columns, an ISIC row with two classes, an unknown split
  name or finding) raise :class:`ArchiveError` naming the file and line.
* **Metadata** holds extra columns as strings; columns that name a person directly (name,
  birth date, address, …) are dropped.
* **Files are recognised by extension** while scanning (:data:`IMAGE_EXTENSIONS`), for
  speed; decoding (:func:`load_pixels`) goes by content.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import logging
import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from model.config import Task
from model.decoding import (
    DEFAULT_LIMITS,
    DecodeLimits,
    check_byte_count,
    decode_file,
    decode_image,
)

if TYPE_CHECKING:
    from model.checkpoint import LabelSpace

logger = logging.getLogger(__name__)

LAYOUTS: tuple[str, ...] = (
    "manifest",
    "isic2018",
    "chestxray14",
    "medmnist",
    "class_folders",
    "image_folder",
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom"}
)

# Carved splits (when the archive gives none): this share of the samples goes to test.
CARVED_TEST_FRACTION = 0.1

# Skip reasons (keys of Archive.skipped).
MISSING_IMAGE = "image file missing"
OUTSIDE_ROOT = "path outside the archive folder"
NOT_IN_SPLIT_LISTS = "not in train_val_list.txt or test_list.txt"
OUTSIDE_CLASS_FOLDER = "image outside a class folder"
NOT_IN_GROUND_TRUTH = "image without a ground-truth row"

ISIC_CODES: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC_NAMES: Mapping[str, str] = {
    "MEL": "Melanoma",
    "NV": "Melanocytic nevus",
    "BCC": "Basal cell carcinoma",
    "AKIEC": "Actinic keratosis / intraepithelial carcinoma (Bowen's)",
    "BKL": "Benign keratosis",
    "DF": "Dermatofibroma",
    "VASC": "Vascular lesion",
}
NIH_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NIH_NAMES: Mapping[str, str] = {code: code.replace("_", " ") for code in NIH_FINDINGS}
NO_FINDING = "No Finding"

_SPLIT_ALIASES: Mapping[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_SKIPPED_DIR_NAMES = frozenset({"__MACOSX"})
# Normalised (lower case, letters and digits only) names of columns / metadata keys that
# hold a direct identifier of a person. The one list: the archive readers drop such
# columns and the metadata store refuses such keys (:func:`is_identifying_key`).
_IDENTIFYING_COLUMNS = frozenset(
    {
        "name",
        "patientname",
        "patientsname",
        "fullname",
        "firstname",
        "lastname",
        "surname",
        "givenname",
        "familyname",
        "birthdate",
        "dateofbirth",
        "dob",
        "patientbirthdate",
        "patientsbirthdate",
        "address",
        "patientaddress",
        "phone",
        "telephone",
        "email",
        "mrn",
        "medicalrecordnumber",
        "ssn",
        "patientid",
        "patienttelephonenumbers",
        "otherpatientids",
        "otherpatientnames",
        "patientmothersbirthname",
        "referringphysicianname",
        "institutionaladdress",
        "accessionnumber",
    }
)


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
    group: str | None = None  # patient / lesion id: no group is in two carved splits
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    labelled: bool = True


@dataclass(frozen=True)
class Archive:
    """The samples of one dataset folder, with its label space and what was left out."""

    root: Path
    layout: str  # one of LAYOUTS
    task: Task
    codes: tuple[str, ...]  # class codes in logit order
    names: tuple[str, ...]  # readable names, same order
    samples: tuple[Sample, ...]
    skipped: Mapping[str, int]  # reason → count

    def split(self, name: str) -> list[Sample]:
        """The samples of split `name` (``"train"``, ``"val"``, ``"test"`` or ``""``)."""
        if name not in (*SPLITS, ""):
            raise ValueError(f"unknown split {name!r}: choose one of {', '.join(SPLITS)} or ''")
        return [sample for sample in self.samples if sample.split == name]

    def label_space(self) -> LabelSpace:
        from model.checkpoint import LabelSpace  # keeps torch out of this module's imports

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
        task = "multi-label" if self.task is Task.MULTI_LABEL else "single-label"
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
        return " ".join(parts)


def _code_index(index: Mapping[str, int], code: str, sample: Sample) -> int:
    try:
        return index[code]
    except KeyError:
        raise ArchiveError(
            f"sample {sample.key!r} has label {code!r}, which is not one of the archive's "
            f"classes ({', '.join(index)})"
        ) from None


# --------------------------------------------------------------------------- entry points


def detect_layout(root: Path) -> str:
    """Name the layout of `root` (one of :data:`LAYOUTS`), trying them in a fixed order."""
    root = Path(root)
    if not root.exists():
        raise ArchiveError(f"{root} does not exist")
    if root.is_file():
        if root.suffix.lower() == ".npz":
            return "medmnist"
        raise ArchiveError(f"{root} is a file; give a dataset folder or a MedMNIST .npz file")
    if _has_isic_folders(root):
        return "isic2018"
    if (root / "Data_Entry_2017.csv").is_file():
        return "chestxray14"
    if (root / "labels.csv").is_file():
        return "manifest"
    if _npz_files(root):
        return "medmnist"
    if len(_class_folder_classes(root)) >= 2:
        return "class_folders"
    if next(_scan_images(root), None) is not None:
        return "image_folder"
    raise ArchiveError(
        f"{root} matches no dataset layout: looked for ISIC2018_Task3_Training_Input/"
        "GroundTruth folders (isic2018), Data_Entry_2017.csv (chestxray14), labels.csv "
        "(manifest), a .npz file (medmnist), two or more class folders with images "
        f"(class_folders) and any image file ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
        "(image_folder); found none"
    )


def read_archive(
    root: str | Path,
    layout: str = "auto",
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Archive:
    """Read the dataset at `root` in `layout` (``"auto"``: :func:`detect_layout`).

    `val_fraction` and `seed` apply only where the archive gives no validation split and
    one is carved off by group (see the module docstring).
    """
    root = Path(root)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not root.exists():
        raise ArchiveError(f"{root} does not exist")
    if layout == "auto":
        layout = detect_layout(root)
        logger.info("%s: detected the %s layout", root, layout)
    elif layout not in LAYOUTS:
        raise ArchiveError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if root.is_file() and layout != "medmnist":
        raise ArchiveError(f"{root} is a file; the {layout} layout needs a folder")
    carve = _Carver(val_fraction=val_fraction, seed=seed)
    archive = _READERS[layout](root, carve)
    if not archive.samples:
        skipped = "; ".join(f"{reason}: {count:,}" for reason, count in archive.skipped.items())
        raise ArchiveError(
            f"{root} ({layout} layout) holds no usable samples"
            + (f" (skipped {skipped})" if skipped else "")
        )
    _warn_on_groups_in_several_splits(archive)
    logger.info("%s", archive.summary())
    return archive


def sample_content(
    sample: Sample, limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[str, bytes | np.ndarray]:
    """(content SHA-256, what to decode): a file's bytes, read once, or an array's pixels.

    The hash is a case's content identity (the training cache and the indexer key on it).
    Raises :class:`model.decoding.ImageDecodeError` (``TOO_LARGE``) for a file over
    ``limits.max_bytes``, and OSError/ValueError/KeyError/IndexError for content that
    cannot be read at all.
    """
    if sample.path is not None:
        check_byte_count(sample.path.stat().st_size, limits)
        with sample.path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)  # decode_image refuses anything longer
        return hashlib.sha256(data).hexdigest(), data
    pixels = np.ascontiguousarray(load_pixels(sample, limits), dtype=np.uint8)
    digest = hashlib.sha256(b"array:" + repr(pixels.shape).encode() + b":")
    digest.update(pixels.tobytes())
    return digest.hexdigest(), pixels


def decode_content(
    content: bytes | np.ndarray, limits: DecodeLimits = DEFAULT_LIMITS
) -> tuple[np.ndarray, Mapping[str, str]]:
    """(uint8 pixels, non-identifying metadata) of what :func:`sample_content` returned."""
    if isinstance(content, bytes):
        decoded = decode_image(content, limits)
        return decoded.pixels, decoded.metadata
    return content, {}


def load_pixels(sample: Sample, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The sample's pixels: uint8 (H, W, 1) or (H, W, 3).

    Files are decoded by content (:func:`model.decoding.decode_file`, whose errors pass
    through); array samples are cut from their ``.npz`` array, the last few arrays read
    being kept in memory.
    """
    if sample.path is not None:
        return decode_file(sample.path, limits).pixels
    if sample.array is None:
        raise ArchiveError(f"sample {sample.key!r} has neither a file nor an array")
    ref = sample.array
    array = _cached_npz_array(str(ref.file), ref.file.stat().st_mtime_ns, ref.array)
    pixels = array[ref.index]
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return np.array(pixels, dtype=np.uint8, order="C")  # a copy: the cache stays intact


@functools.lru_cache(maxsize=4)
def _cached_npz_array(file: str, mtime_ns: int, name: str) -> np.ndarray:
    """A whole array of an npz (decompressing it per sample would be far too slow)."""
    del mtime_ns  # part of the cache key only: a rewritten file is read again
    with np.load(file, allow_pickle=False) as npz:
        return np.asarray(npz[name])


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class _Carver:
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


def _group_of(sample: Sample) -> str:
    return sample.group if sample.group is not None else f"\0{sample.key}"


def _with_carved_splits(
    samples: Sequence[Sample], assign: Mapping[str, str], from_split: str
) -> list[Sample]:
    """`samples` with those of `from_split` moved to their group's split in `assign`."""
    return [
        _replace_split(sample, assign[_group_of(sample)]) if sample.split == from_split else sample
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


def _normalise_split(value: str, where: str) -> str:
    split = _SPLIT_ALIASES.get(value.strip().lower())
    if split is None:
        raise ArchiveError(
            f"{where}: unknown split {value!r} (use train/training, val/valid/validation or test)"
        )
    return split


def _warn_on_groups_in_several_splits(archive: Archive) -> None:
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


# --------------------------------------------------------------------------- scanning


def _is_skipped_name(name: str) -> bool:
    return name.startswith(".") or name in _SKIPPED_DIR_NAMES


def _scan_images(folder: Path) -> Iterator[Path]:
    """Image/DICOM files under `folder` (by extension), recursively, in sorted order.

    Hidden files and folders are skipped; symbolic links to folders are not followed.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        logger.warning("cannot list %s: %s", folder, exc)
        return
    for entry in entries:
        if _is_skipped_name(entry.name):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _scan_images(Path(entry.path))
        elif _extension(entry.name) in IMAGE_EXTENSIONS and entry.is_file():
            yield Path(entry.path)


def _extension(name: str) -> str:
    """``.png`` for ``a.PNG`` (what Path.suffix gives, lower-cased, without a Path)."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        child for child in folder.iterdir() if child.is_dir() and not _is_skipped_name(child.name)
    )


def _relative_key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _ordered_label_space(codes: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Codes in their published order when the set is a known one, else sorted; names."""
    for known_order, known_names in ((ISIC_CODES, ISIC_NAMES), (NIH_FINDINGS, NIH_NAMES)):
        if codes and codes <= set(known_order):
            ordered = tuple(code for code in known_order if code in codes)
            return ordered, tuple(known_names[code] for code in ordered)
    ordered = tuple(sorted(codes))
    return ordered, ordered


# --------------------------------------------------------------------------- CSV


def _read_csv(path: Path, what: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
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


def _find_column(header: Sequence[str], names: Sequence[str]) -> int | None:
    """Index of the first of `names` in `header` (case-insensitive), or None."""
    lowered = [column.lower() for column in header]
    for name in names:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    return None


def _require_column(header: Sequence[str], names: Sequence[str], path: Path, what: str) -> int:
    column = _find_column(header, names)
    if column is None:
        wanted = " or ".join(repr(name) for name in names)
        raise ArchiveError(
            f"{what} at {path} has no {wanted} column (columns: {', '.join(header)})"
        )
    return column


def is_identifying_key(column: str) -> bool:
    """Whether a column or metadata key names a direct identifier (never kept or stored)."""
    return re.sub(r"[^a-z0-9]", "", column.lower()) in _IDENTIFYING_COLUMNS


# --------------------------------------------------------------------------- manifest

_MANIFEST_FILE_COLUMNS = ("file", "path", "filename", "image")
_MANIFEST_LABEL_COLUMNS = ("label", "labels")
_MANIFEST_GROUP_COLUMNS = ("group", "patient_id", "lesion_id")


@dataclass(frozen=True)
class _ManifestRow:
    line: int
    key: str
    path: Path
    label: str
    split: str
    group: str | None
    metadata: Mapping[str, str]


def _read_manifest(root: Path, carve: _Carver) -> Archive:
    labels_path = root / "labels.csv"
    if not labels_path.is_file():
        raise ArchiveError(
            f"no labels.csv in {root}: the manifest layout needs labels.csv with the columns "
            "file,label[,split,…]"
        )
    header, rows = _read_csv(labels_path, "labels.csv")
    file_column = _require_column(header, _MANIFEST_FILE_COLUMNS, labels_path, "labels.csv")
    label_column = _require_column(header, _MANIFEST_LABEL_COLUMNS, labels_path, "labels.csv")
    split_column = _find_column(header, ("split",))
    group_column = _find_column(header, _MANIFEST_GROUP_COLUMNS)
    used = {file_column, label_column, split_column, group_column}
    dropped = [name for i, name in enumerate(header) if i not in used and is_identifying_key(name)]
    if dropped:
        logger.info("%s: not keeping identifying columns %s", labels_path, ", ".join(dropped))
    metadata_columns = [
        (i, name) for i, name in enumerate(header) if i not in used and not is_identifying_key(name)
    ]

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
        split = "" if split_column is None else _normalise_split(row[split_column], where)
        group = None if group_column is None else (row[group_column].strip() or None)
        metadata = {name: row[i].strip() for i, name in metadata_columns if row[i].strip()}
        kept.append(_ManifestRow(line, key, path, row[label_column], split, group, metadata))

    task = Task.MULTI_LABEL if any("|" in row.label for row in kept) else Task.SINGLE_LABEL
    samples = [_manifest_sample(row, task) for row in kept]
    codes, names = _ordered_label_space({code for sample in samples for code in sample.labels})
    if split_column is None:
        assign = carve.train_val_test([_group_of(sample) for sample in samples])
        samples = _with_carved_splits(samples, assign, from_split="")
    return Archive(root, "manifest", task, codes, names, tuple(samples), dict(skipped))


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


# --------------------------------------------------------------------------- ISIC 2018

_ISIC_PARTS = (("Training", "train"), ("Validation", "val"), ("Test", "test"))
_HAM_METADATA_FILE = "HAM10000_metadata.csv"
_HAM_METADATA_COLUMNS = ("dx_type", "age", "sex", "localization")


def _isic_input_dir(root: Path, part: str) -> Path:
    return root / f"ISIC2018_Task3_{part}_Input"


def _isic_ground_truth(root: Path, part: str) -> Path | None:
    """The part's ground-truth CSV: its official name, or the one CSV in the folder."""
    folder = root / f"ISIC2018_Task3_{part}_GroundTruth"
    official = folder / f"ISIC2018_Task3_{part}_GroundTruth.csv"
    if official.is_file():
        return official
    if not folder.is_dir():
        return None
    csvs = sorted(path for path in folder.glob("*.csv") if not _is_skipped_name(path.name))
    if len(csvs) > 1:
        raise ArchiveError(
            f"{folder} holds several CSV files ({', '.join(p.name for p in csvs)}) and none is "
            f"named {official.name}"
        )
    return csvs[0] if csvs else None


def _has_isic_folders(root: Path) -> bool:
    return (
        _isic_input_dir(root, "Training").is_dir()
        or (root / "ISIC2018_Task3_Training_GroundTruth").is_dir()
    )


def _read_isic2018(root: Path, carve: _Carver) -> Archive:
    training_csv = _isic_ground_truth(root, "Training")
    if training_csv is None or not _isic_input_dir(root, "Training").is_dir():
        raise ArchiveError(
            f"{root} is not an ISIC 2018 Task 3 folder: it needs ISIC2018_Task3_Training_Input/ "
            "and ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv"
        )
    ham = _read_ham_metadata(root / _HAM_METADATA_FILE)
    skipped: Counter[str] = Counter()
    samples: list[Sample] = []
    for part, split in _ISIC_PARTS:
        input_dir = _isic_input_dir(root, part)
        images = _images_by_stem(input_dir) if input_dir.is_dir() else {}
        csv_path = training_csv if part == "Training" else _isic_ground_truth(root, part)
        if csv_path is None:
            if images:
                logger.info("%s has no ground truth: its images are unlabelled", input_dir)
            labels: dict[str, str | None] = dict.fromkeys(images)
        else:
            labels = {image_id: code for image_id, code in _read_isic_ground_truth(csv_path)}
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
    if (
        not _isic_input_dir(root, "Validation").is_dir()
        and _isic_ground_truth(root, "Validation") is None
    ):
        assign = carve.train_val([_group_of(s) for s in samples if s.split == "train"])
        samples = _with_carved_splits(samples, assign, from_split="train")
    names = tuple(ISIC_NAMES[code] for code in ISIC_CODES)
    return Archive(
        root, "isic2018", Task.SINGLE_LABEL, ISIC_CODES, names, tuple(samples), dict(skipped)
    )


def _images_by_stem(folder: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in _scan_images(folder):
        images.setdefault(path.stem, path)
    return images


def _read_isic_ground_truth(path: Path) -> Iterator[tuple[str, str]]:
    """(image id, class code) per row of a one-hot ISIC 2018 Task 3 ground-truth CSV."""
    what = "ISIC ground truth"
    header, rows = _read_csv(path, what)
    image_column = _require_column(header, ("image",), path, what)
    code_columns = [_require_column(header, (code,), path, what) for code in ISIC_CODES]
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


def _read_ham_metadata(path: Path) -> dict[str, tuple[str | None, dict[str, str]]]:
    """image id → (lesion id, metadata) from HAM10000_metadata.csv; {} when it is absent."""
    if not path.is_file():
        return {}
    what = _HAM_METADATA_FILE
    header, rows = _read_csv(path, what)
    image_column = _require_column(header, ("image_id",), path, what)
    lesion_column = _require_column(header, ("lesion_id",), path, what)
    dx_column = _find_column(header, ("dx",))
    extra = [(name, _find_column(header, (name,))) for name in (*_HAM_METADATA_COLUMNS,)]
    joined: dict[str, tuple[str | None, dict[str, str]]] = {}
    for _line, row in rows:
        metadata = {name: row[i].strip() for name, i in extra if i is not None and row[i].strip()}
        if dx_column is not None:
            metadata["dx"] = row[dx_column].strip()
        joined[row[image_column].strip()] = (row[lesion_column].strip() or None, metadata)
    return joined


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


# --------------------------------------------------------------------------- ChestX-ray14

_NIH_LABELS_FILE = "Data_Entry_2017.csv"
_NIH_METADATA_COLUMNS = (
    ("age", "Patient Age"),
    ("sex", "Patient Gender"),
    ("view_position", "View Position"),
)


def _read_chestxray14(root: Path, carve: _Carver) -> Archive:
    labels_path = root / _NIH_LABELS_FILE
    if not labels_path.is_file():
        raise ArchiveError(
            f"no {_NIH_LABELS_FILE} in {root}: the chestxray14 layout needs the NIH label file "
            "and images in images*/ folders"
        )
    present = _nih_image_files(root)
    test_list = _read_name_list(root / "test_list.txt")
    train_val_list = _read_name_list(root / "train_val_list.txt")
    if test_list is None and train_val_list is None:
        logger.warning(
            "%s has neither train_val_list.txt nor test_list.txt: carving splits by patient",
            root,
        )

    what = _NIH_LABELS_FILE
    header, rows = _read_csv(labels_path, what)
    image_column = _require_column(header, ("Image Index",), labels_path, what)
    finding_column = _require_column(header, ("Finding Labels",), labels_path, what)
    patient_column = _require_column(header, ("Patient ID",), labels_path, what)
    metadata_columns = [
        (name, column)
        for name, title in _NIH_METADATA_COLUMNS
        if (column := _find_column(header, (title,))) is not None
    ]
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
                metadata={key: row[i].strip() for key, i in metadata_columns if row[i].strip()},
            )
        )
    groups = [_group_of(sample) for sample in samples if sample.split == "train"]
    if test_list is None and train_val_list is None:
        assign = carve.train_val_test(groups)
    else:
        assign = carve.train_val(groups)
    samples = _with_carved_splits(samples, assign, from_split="train")
    names = tuple(NIH_NAMES[code] for code in NIH_FINDINGS)
    return Archive(
        root, "chestxray14", Task.MULTI_LABEL, NIH_FINDINGS, names, tuple(samples), dict(skipped)
    )


def _nih_image_files(root: Path) -> dict[str, Path]:
    """File name → path for every image under the root's ``images*`` folders (one scan)."""
    files: dict[str, Path] = {}
    for folder in _subfolders(root):
        if folder.name.lower().startswith("images"):
            for path in _scan_images(folder):
                if files.setdefault(path.name, path) != path:
                    logger.warning("%s: %s is also at %s; using the first", root, path.name, path)
    return files


def _read_name_list(path: Path) -> frozenset[str] | None:
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"cannot read {path}: {exc}") from exc
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


# --------------------------------------------------------------------------- MedMNIST

# Known MedMNIST label spaces, by a name the file name contains: codes and readable names.
_MEDMNIST_LABELS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pneumoniamnist": (("normal", "pneumonia"), ("Normal", "Pneumonia")),
}


def _npz_files(folder: Path) -> list[Path]:
    return sorted(
        path for path in folder.glob("*.npz") if path.is_file() and not _is_skipped_name(path.name)
    )


def _read_medmnist(root: Path, carve: _Carver) -> Archive:
    del carve  # MedMNIST always gives its splits
    npz_path = root if root.is_file() else _single_npz(root)
    headers = _npz_array_headers(npz_path)
    splits = [split for split in SPLITS if f"{split}_images" in headers]
    if not splits:
        raise ArchiveError(
            f"{npz_path} is not in the MedMNIST layout: it needs train_images/train_labels "
            f"(and val_*, test_*) arrays; it holds {', '.join(sorted(headers)) or 'none'}"
        )
    with np.load(npz_path, allow_pickle=False) as npz:
        labels = {split: _medmnist_labels(npz, split, headers, npz_path) for split in splits}
    columns = {array.shape[1] for array in labels.values()}
    if len(columns) != 1:
        raise ArchiveError(f"{npz_path}: the label arrays disagree on their number of columns")
    (column_count,) = columns
    task = Task.MULTI_LABEL if column_count > 1 else Task.SINGLE_LABEL
    if task is Task.MULTI_LABEL:
        class_count = column_count
        for split, array in labels.items():
            if not np.isin(array, (0, 1)).all():
                raise ArchiveError(
                    f"{npz_path}: {split}_labels has {column_count} columns but values other "
                    "than 0 and 1 (multi-label arrays must be multi-hot)"
                )
    else:
        class_count = 1 + max(int(array.max(initial=0)) for array in labels.values())
    codes, names = _medmnist_label_space(npz_path, class_count)
    samples: list[Sample] = []
    for split in splits:
        for index, row in enumerate(labels[split].tolist()):
            if task is Task.MULTI_LABEL:
                sample_labels = tuple(code for code, value in zip(codes, row, strict=True) if value)
            else:
                sample_labels = (codes[row[0]],)
            samples.append(
                Sample(
                    key=f"{split}/{index}",
                    labels=sample_labels,
                    split=split,
                    array=ArrayRef(npz_path, f"{split}_images", index),
                )
            )
    return Archive(root, "medmnist", task, codes, names, tuple(samples), {})


def _single_npz(folder: Path) -> Path:
    files = _npz_files(folder)
    if not files:
        raise ArchiveError(f"no .npz file in {folder}: the medmnist layout needs one")
    if len(files) > 1:
        raise ArchiveError(
            f"{folder} holds several .npz files ({', '.join(p.name for p in files)}); "
            "give the path of the one to read"
        )
    return files[0]


@dataclass(frozen=True)
class _ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]


def _npz_array_headers(path: Path) -> dict[str, _ArrayHeader]:
    """Shape and dtype of every array in an npz, from the headers (no array is loaded)."""
    headers: dict[str, _ArrayHeader] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                headers[info.filename.removesuffix(".npy")] = _ArrayHeader(tuple(shape), dtype)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ArchiveError(f"{path} is not a readable .npz file: {exc}") from exc
    return headers


def _medmnist_labels(
    npz: Mapping[str, np.ndarray], split: str, headers: Mapping[str, _ArrayHeader], path: Path
) -> np.ndarray:
    """The split's labels as int64 (N, C), after checking them against its images."""
    images = headers[f"{split}_images"]
    if f"{split}_labels" not in headers:
        raise ArchiveError(f"{path} has {split}_images but no {split}_labels")
    if images.dtype != np.uint8 or not (
        len(images.shape) == 3 or (len(images.shape) == 4 and images.shape[3] in (1, 3))
    ):
        raise ArchiveError(
            f"{path}: {split}_images is {images.dtype} {images.shape}; expected uint8 "
            "(N, H, W) or (N, H, W, 1|3) (3-D volumes are not supported)"
        )
    labels = np.asarray(npz[f"{split}_labels"])
    if labels.ndim == 1:
        labels = labels[:, np.newaxis]
    if labels.ndim != 2 or labels.shape[0] != images.shape[0]:
        raise ArchiveError(
            f"{path}: {split}_labels has shape {labels.shape} for {images.shape[0]} images"
        )
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ArchiveError(f"{path}: {split}_labels must hold non-negative integers")
    return labels.astype(np.int64)


def _medmnist_label_space(path: Path, class_count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    for name, (codes, names) in _MEDMNIST_LABELS.items():
        if name in path.name.lower() and len(codes) >= class_count:
            return codes, names
    codes = tuple(str(i) for i in range(class_count))
    return codes, codes


# --------------------------------------------------------------------------- folders


def _class_folder_classes(root: Path) -> set[str]:
    """Class names of a class-folder tree (with or without split folders); may be empty."""
    return {class_dir.name for _, class_dir in _class_dirs(root)}


def _split_dirs(root: Path) -> list[tuple[str, Path]] | None:
    """(split, folder) when every subfolder of `root` is a split folder, else None."""
    subfolders = _subfolders(root)
    if not subfolders or any(folder.name.lower() not in _SPLIT_ALIASES for folder in subfolders):
        return None
    return [(_SPLIT_ALIASES[folder.name.lower()], folder) for folder in subfolders]


def _class_dirs(root: Path) -> list[tuple[str, Path]]:
    """(split or "", class folder) for every class folder that holds an image."""
    split_dirs = _split_dirs(root)
    parents = split_dirs if split_dirs is not None else [("", root)]
    return [
        (split, folder)
        for split, parent in parents
        for folder in _subfolders(parent)
        if next(_scan_images(folder), None) is not None
    ]


def _read_class_folders(root: Path, carve: _Carver) -> Archive:
    class_dirs = _class_dirs(root)
    classes = {folder.name for _, folder in class_dirs}
    if len(classes) < 2:
        raise ArchiveError(
            f"{root} is not in the class_folders layout: it needs two or more class folders "
            f"with images (root/<class>/… or root/<split>/<class>/…); found "
            f"{len(classes)}{': ' + ', '.join(sorted(classes)) if classes else ''}"
        )
    codes, names = _ordered_label_space(classes)
    samples = [
        Sample(key=_relative_key(path, root), labels=(folder.name,), split=split, path=path)
        for split, folder in class_dirs
        for path in _scan_images(folder)
    ]
    in_class_dirs = {sample.path for sample in samples}
    outside = sum(1 for path in _scan_images(root) if path not in in_class_dirs)
    skipped = {OUTSIDE_CLASS_FOLDER: outside} if outside else {}
    if _split_dirs(root) is None:
        assign = carve.train_val_test([_group_of(sample) for sample in samples])
        samples = _with_carved_splits(samples, assign, from_split="")
    return Archive(root, "class_folders", Task.SINGLE_LABEL, codes, names, tuple(samples), skipped)


def _read_image_folder(root: Path, carve: _Carver) -> Archive:
    del carve  # unlabelled: no splits
    samples = tuple(
        Sample(key=_relative_key(path, root), labels=(), split="", path=path, labelled=False)
        for path in _scan_images(root)
    )
    if not samples:
        raise ArchiveError(
            f"no image files in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return Archive(root, "image_folder", Task.SINGLE_LABEL, (), (), samples, {})


_READERS = {
    "manifest": _read_manifest,
    "isic2018": _read_isic2018,
    "chestxray14": _read_chestxray14,
    "medmnist": _read_medmnist,
    "class_folders": _read_class_folders,
    "image_folder": _read_image_folder,
}

__all__ = [
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "SPLITS",
    "Archive",
    "ArchiveError",
    "ArrayRef",
    "Sample",
    "detect_layout",
    "load_pixels",
    "read_archive",
]
