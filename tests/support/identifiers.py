"""A manifest whose ``labels.csv`` carries every direct identifier, each cell a marker.

The columns name what the DICOM PS3.15 basic application confidentiality profile and the
HIPAA Safe Harbor method remove (names, ids, dates, places, numbers, UIDs, …), in the
spellings label tables use. Every identifier cell holds a distinctive marker
(``ZQ<row><column>QZ``, never a hex digest or a word), so a test can search any output for
all of them; the allowlisted clinical columns hold ordinary values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from support.archives import write_csv, write_image

# The group: the coarsest patient-like column, stored only as a salted hash.
GROUP_COLUMN = "patient_id"
# fmt: off
IDENTIFIER_COLUMNS: tuple[str, ...] = (
    # names
    "patient", "Patient Name", "PatientName", "first_name", "last_name", "surname",
    "initials", "PatientBirthName", "mother_maiden_name", "other_patient_names",
    "ReferringPhysicianName", "performing_physician", "operators_name", "next_of_kin",
    # record numbers and ids
    "mrn", "Medical Record Number", "subject_id", "participant_id", "lesion_id",
    "OtherPatientIDs", "issuer_of_patient_id", "case_number", "person",
    # dates
    "patient_dob", "Date of Birth", "PatientBirthDate", "dob", "admission_date",
    "discharge_date", "date_of_death", "study_date", "AcquisitionDateTime", "study_time",
    # places
    "address", "Patient Address", "street", "city", "county", "zip", "postcode",
    "state", "institution_name", "InstitutionAddress", "station_name",
    # phone, fax, e-mail, web
    "phone", "telephone_number", "fax", "e-mail", "email_address", "url", "ip_address",
    # national, insurance, account, licence and vehicle numbers
    "ssn", "social_security_number", "national_id", "nhs_number", "insurance_number",
    "health_plan_beneficiary_number", "MedicareNumber", "account_number",
    "licence_number", "driver_license", "vehicle_id", "license_plate",
    # devices, biometrics, photographs
    "device_serial_number", "DeviceSerialNumber", "device_uid", "biometric_id",
    "fingerprint", "voice_print", "photo_id", "full_face_photo",
    # DICOM UIDs and numbers
    "study_instance_uid", "StudyInstanceUID", "series_instance_uid", "sop_instance_uid",
    "frame_of_reference_uid", "accession_number", "AccessionNumber", "StudyID",
    "requested_procedure_id",
    # other characteristics and free text
    "ethnic_group", "occupation", "religious_preference", "patient_comments",
    "additional_patient_history", "notes",
)
# fmt: on
# Clinical columns on the default allowlist (spelled variously) and the value each holds.
CLINICAL_VALUES: dict[str, str] = {
    "age": "45",
    "Sex": "female",
    "View Position": "PA",
    "anatom_site_general": "torso",
    "Fitzpatrick Skin Type": "III",
    "dx_type": "histo",
}
# A clinical column a deployment adds to the allowlist (MEDRET_METADATA_ALLOWLIST).
EXTENSION_VALUES: dict[str, str] = {"contrast": "none"}
CLASSES = ("benign", "malignant")


@dataclass(frozen=True)
class IdentifierManifest:
    root: Path
    markers: tuple[str, ...]  # every identifier and group cell's value


def marker(row: int, column: int) -> str:
    return f"ZQ{row:02d}{column:03d}QZ"


def make_identifier_manifest(
    root: Path, *, images: int = 16, patients: int = 4
) -> IdentifierManifest:
    """``root/labels.csv`` with a file, label, group, every identifier, the clinical and
    the extension columns; ``images`` small PNGs under ``root/images`` of two classes."""
    header = ["file", "label", GROUP_COLUMN, *IDENTIFIER_COLUMNS]
    header += [*CLINICAL_VALUES, *EXTENSION_VALUES]
    rows: list[list[str]] = []
    markers: list[str] = []
    for i in range(images):
        name = f"img_{i:02d}.png"
        write_image(root / "images" / name, value=i * 13)
        patient = i % patients
        group = marker(patient, 0)  # one patient's images share the group value
        identifiers = [marker(i, column) for column in range(1, len(IDENTIFIER_COLUMNS) + 1)]
        clinical = [*CLINICAL_VALUES.values(), *EXTENSION_VALUES.values()]
        rows.append([f"images/{name}", CLASSES[i % 2], group, *identifiers, *clinical])
        markers += [group, *identifiers]
    write_csv(root / "labels.csv", header, rows)
    return IdentifierManifest(root, tuple(dict.fromkeys(markers)))
