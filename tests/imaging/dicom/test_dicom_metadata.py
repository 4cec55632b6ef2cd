"""DICOM metadata: the allowlist is all that is reported, no identifier ever."""

from __future__ import annotations

import numpy as np

from support.decoding import decode_dataset
from support.dicom import make_dataset

# --------------------------------------------------------------------------- metadata


IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-556677",
    "PatientBirthDate": "19510203",
    "PatientAddress": "12 Elm Street, Springfield",
    "InstitutionName": "St Example Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "AccessionNumber": "ACC-99881",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.111222333",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.444555666",
    "OtherPatientIDs": "OTHER-4242",
    "StationName": "XRAY-ROOM-7",
}


def test_metadata_keeps_allowed_attributes_and_no_identifiers() -> None:
    ds = make_dataset(np.zeros((6, 5), np.uint8))
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageLaterality = "L"
    ds.StudyDate = "20240131"
    ds.Manufacturer = "Acme Imaging"
    ds.ManufacturerModelName = "Model 9"
    ds.PixelSpacing = [0.139, 0.14]
    metadata = decode_dataset(ds).metadata
    assert metadata == {
        "modality": "DX",
        "body_part": "CHEST",
        "view_position": "PA",
        "laterality": "L",
        "study_date": "20240131",
        "manufacturer": "Acme Imaging",
        "manufacturer_model": "Model 9",
        "photometric": "MONOCHROME2",
        "rows": "6",
        "columns": "5",
        "bits_stored": "8",
        "pixel_spacing": "0.139\\0.14",
        "number_of_frames": "1",
        "frame_index": "0",
        "sop_class": "Secondary Capture Image Storage",
        "transfer_syntax": "Explicit VR Little Endian",
    }
    everything = " ".join([*metadata.keys(), *metadata.values()]).lower()
    instance_uid = str(ds.SOPInstanceUID)
    for value in [*IDENTIFIERS.values(), instance_uid, "Doe", "Jane", "House"]:
        assert value.lower() not in everything
