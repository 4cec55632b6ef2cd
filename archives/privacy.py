"""Which columns and metadata keys name a person directly.

The one list: the archive readers drop such columns (a sample's metadata holds the other
extra columns, as strings) and the metadata store refuses such keys
(:func:`is_identifying_key`).
"""

from __future__ import annotations

import re

# Normalised (lower case, letters and digits only) names of columns / metadata keys that
# hold a direct identifier of a person.
IDENTIFYING_COLUMNS = frozenset(
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


def is_identifying_key(column: str) -> bool:
    """Whether a column or metadata key names a direct identifier (never kept or stored)."""
    return re.sub(r"[^a-z0-9]", "", column.lower()) in IDENTIFYING_COLUMNS
