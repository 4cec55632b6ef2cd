"""Case metadata from label tables: an allowlist, extendable per deployment, and a "never"
list that no extension can reopen."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from archives.privacy import (
    ALLOWLIST_VARIABLE,
    DEFAULT_METADATA_ALLOWLIST,
    MetadataAllowlist,
    is_identifying_key,
    metadata_allowlist,
    metadata_columns,
    normalise,
)
from archives.records import ArchiveError
from archives.registry import read_archive
from imaging.dicom.metadata import METADATA_ATTRIBUTES
from support.archives import by_key, write_csv, write_image
from support.identifiers import (
    CLINICAL_VALUES,
    EXTENSION_VALUES,
    GROUP_COLUMN,
    IDENTIFIER_COLUMNS,
    make_identifier_manifest,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "indexer.md"
DEFAULT = metadata_allowlist()


def test_default_set_is_kept_in_any_spelling_and_everything_else_dropped_by_name() -> None:
    header = ["file", "View Position", "view_position", "viewposition", "AGE", "scanner", "mrn"]
    columns = metadata_columns(header, used={0}, allowlist=DEFAULT)
    assert columns.kept == (
        (1, "View Position"),
        (2, "view_position"),
        (3, "viewposition"),
        (4, "AGE"),
    )
    assert columns.dropped == ("scanner", "mrn")  # names, in header order; the used one neither
    row = ["a.png", "PA", " AP ", "", "61", "GE", "123456"]
    assert columns.values(row) == {"View Position": "PA", "view_position": "AP", "AGE": "61"}


def test_keys_rename_kept_columns_only() -> None:
    columns = metadata_columns(
        ["Patient Age", "Follow-up #"], keys={"Patient Age": "age", "Follow-up #": "visit"},
        allowlist=DEFAULT,
    )  # fmt: skip
    assert (columns.kept, columns.dropped) == (((0, "age"),), ("Follow-up #",))


def test_every_identifier_column_is_dropped_even_from_an_allowlist_that_names_it() -> None:
    header = [*IDENTIFIER_COLUMNS, GROUP_COLUMN]
    assert metadata_columns(header, allowlist=DEFAULT).kept == ()
    naming_all = MetadataAllowlist(frozenset(map(normalise, header)))  # not metadata_allowlist
    kept = [key for _, key in metadata_columns(header, allowlist=naming_all).kept]
    # dates (DICOM keeps study_date), a state, and characteristics that name no one
    assert kept == [
        "study_date", "AcquisitionDateTime", "study_time", "state", "ethnic_group",
        "occupation", "religious_preference", "additional_patient_history",
    ]  # fmt: skip


def test_the_setting_extends_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    header = ["file", "Scanner Model", "contrast", "sex", "notes"]
    monkeypatch.setenv(ALLOWLIST_VARIABLE, " scanner_model , Contrast,,")
    columns = metadata_columns(header, used={0})  # this deployment's list
    assert [key for _, key in columns.kept] == ["Scanner Model", "contrast", "sex"]
    assert columns.dropped == ("notes",)
    monkeypatch.delenv(ALLOWLIST_VARIABLE)
    assert metadata_columns(header, used={0}).dropped == ("Scanner Model", "contrast", "notes")


@pytest.mark.parametrize(
    "entry",
    [
        "mrn", "Patient DOB", "patientdob", "nhs_number", "PatientID", "first name", "e-mail",
        "study_instance_uid", "patient", "Subject", "zip", "national_id", "insurance_no",
        "DeviceSerialNumber", "ip_address", "home_address", "mobile_phone",
    ],
)  # fmt: skip
def test_a_never_column_in_the_setting_is_refused(
    entry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ArchiveError, match=rf"{ALLOWLIST_VARIABLE} names {re.escape(repr(entry))}"):
        metadata_allowlist(["scanner", entry])
    monkeypatch.setenv(ALLOWLIST_VARIABLE, f"scanner,{entry}")
    with pytest.raises(ArchiveError, match="never kept as case metadata"):
        metadata_columns(["scanner"])


def test_reading_an_archive_with_a_never_column_in_the_setting_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "a.png")
    write_csv(tmp_path / "labels.csv", ["file", "label", "mrn"], [["a.png", "x", "123"]])
    monkeypatch.setenv(ALLOWLIST_VARIABLE, "mrn")
    with pytest.raises(ArchiveError, match=r"'mrn'.*remove it from the list"):
        read_archive(tmp_path)


def test_default_set_and_dicom_keys_are_not_identifying() -> None:
    assert not [name for name in DEFAULT_METADATA_ALLOWLIST if is_identifying_key(name)]
    dicom_keys = [key for key, _ in METADATA_ATTRIBUTES]
    dicom_keys += ["number_of_frames", "frame_index", "sop_class", "transfer_syntax"]
    assert not [key for key in dicom_keys if is_identifying_key(key)]


def test_docs_list_the_default_set() -> None:
    section = DOCS.read_text().split("## Case metadata: an allowlist", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    listed = {name for line in table for name in re.findall(r"`([a-z0-9]+)`", line)}
    assert listed == DEFAULT_METADATA_ALLOWLIST


def test_manifest_keeps_only_clinical_columns_and_groups_by_patient(tmp_path: Path) -> None:
    made = make_identifier_manifest(tmp_path / "phi", images=4, patients=2)
    archive = read_archive(made.root)
    assert archive.layout == "manifest"
    assert archive.dropped_columns == (*IDENTIFIER_COLUMNS, *EXTENSION_VALUES)
    sample = by_key(archive)["images/img_01.png"]
    assert dict(sample.metadata) == CLINICAL_VALUES
    assert sample.group == "ZQ01000QZ"  # the patient id: hashed by the indexer
    dropped = len(IDENTIFIER_COLUMNS) + len(EXTENSION_VALUES)
    assert f"Not kept as metadata (not on the allowlist): {dropped} columns, patient," in (
        archive.summary()
    )


@pytest.mark.parametrize(
    ("columns", "group"),
    [
        (["lesion_id", "Patient ID"], "Patient ID"),  # the patient, not the lesion
        (["lesion", "subject_id"], "subject_id"),
        (["lesion_id", "lesion"], "lesion_id"),
        (["patient", "group"], "group"),  # an explicit group wins
    ],
)
def test_manifest_groups_by_the_coarsest_column(
    tmp_path: Path, columns: list[str], group: str
) -> None:
    write_image(tmp_path / "a.png")
    values = {"lesion_id": "L1", "lesion": "L2", "Patient ID": "P1", "subject_id": "S1"}
    values |= {"patient": "Jane Roe", "group": "G1"}
    write_csv(
        tmp_path / "labels.csv",
        ["file", "label", *columns],
        [["a.png", "x", *(values[c] for c in columns)]],
    )
    archive = read_archive(tmp_path)
    assert archive.samples[0].group == values[group]
    assert archive.samples[0].metadata == {}
    assert set(archive.dropped_columns) == set(columns) - {group}


def test_nih_and_isic_tables_keep_their_clinical_columns(
    nih_fixture: Path, isic_fixture: Path
) -> None:
    nih = read_archive(nih_fixture)
    assert by_key(nih)["00000001_000.png"].metadata == {
        "age": "51",
        "sex": "F",
        "view_position": "PA",
    }
    assert nih.dropped_columns == (
        "Follow-up #", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
    )  # fmt: skip
    isic = read_archive(isic_fixture)
    assert by_key(isic)["ISIC_0000000"].metadata == {
        "dx": "mel", "dx_type": "histo", "age": "40", "sex": "male", "localization": "back",
    }  # fmt: skip
    assert isic.dropped_columns == ()
