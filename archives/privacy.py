"""Which columns of a label table become case metadata: an allowlist, and a "never" list.

Every layout that turns table columns into metadata calls :func:`metadata_columns`: a
column is kept only if its normalised name (:func:`normalise`: lower case, letters and
digits only, so ``View Position``, ``view_position`` and ``viewposition`` are one name)
is on :data:`DEFAULT_METADATA_ALLOWLIST` (clinical, non-identifying fields) or on the
deployment's extension (``MEDRET_METADATA_ALLOWLIST``, :func:`metadata_allowlist`).
Every other column is dropped, and its *name* is reported (names are not identifying,
values are). An extension can never re-admit a column that names a person directly
(:func:`identifying_reason`); the metadata store refuses such keys too
(:func:`is_identifying_key`). The lists are documented in docs/indexer.md.

The Study/Series/SOP Instance UIDs of a PACS case are not metadata: they live in its
``source_uri`` (pseudonymous identifiers, kept on purpose to link back to the PACS); the
patient's name, ID and birth date are never kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from archives.records import ArchiveError

ALLOWLIST_VARIABLE = "MEDRET_METADATA_ALLOWLIST"

# Normalised names of the columns kept by default: clinical fields that do not name a
# person. (Ages above 89 are an identifier under HIPAA Safe Harbor: give an age group.)
DEFAULT_METADATA_ALLOWLIST = frozenset(
    {
        # age and sex
        *("age", "agegroup", "ageband", "agerange", "agebin", "patientage"),
        *("sex", "gender", "patientsex", "patientgender"),
        # where on the body, and how it was imaged
        *("localization", "localisation", "anatomsite", "anatomicalsite", "bodysite"),
        *("anatomsitegeneral", "anatomsitegeneralchallenge", "bodypart", "bodypartexamined"),
        *("laterality", "view", "viewposition", "projection", "modality"),
        # the diagnosis and how it was confirmed
        *("dx", "dxtype", "diagnosis", "diagnosisconfirmtype", "benignmalignant"),
        # the lesion and the skin
        *("lesionsize", "lesiondiameter", "fitzpatrick", "fitzpatrickskintype", "skintype"),
    }
)

# Never metadata, whatever the allowlist says. A column names a person directly if any
# word of its name (split at non-letters and camelCase) is one of _NEVER_WORDS, its
# normalised name is one of _NEVER_NAMES, or contains one of _NEVER_FRAGMENTS.
_NEVER_WORDS = frozenset(
    {
        *("name", "names", "surname", "forename", "initials", "alias"),
        *("id", "ids", "uid", "uids", "identifier", "identifiers", "mrn", "ssn", "nhs"),
        *("dob", "birth", "birthdate", "birthday", "death"),
        *("address", "street", "city", "county", "town", "precinct", "zip", "zipcode"),
        *("postcode", "postal"),
        *("phone", "telephone", "mobile", "fax", "email", "mail", "url", "ip"),
        *("passport", "licence", "license", "insurance", "account", "serial", "vin"),
        *("medicare", "medicaid", "beneficiary", "accession"),
        *("biometric", "fingerprint", "signature", "photo", "photograph", "face", "voice"),
        *("physician", "doctor", "nurse", "operator", "operators"),
        *("comment", "comments", "note", "notes", "remark", "remarks"),
    }
)
_NEVER_NAMES = frozenset(
    {
        *("patient", "subject", "participant", "person", "individual", "lesion", "study"),
        *("series", "instance", "contact", "guardian", "nextofkin", "relative", "donor"),
    }
)
_NEVER_FRAGMENTS = (
    *("name", "birth", "dob", "mrn", "ssn", "dateofdeath", "deathdate", "admissiondate"),
    *("dischargedate", "address", "postcode", "zipcode", "phone", "email", "socialsecurity"),
    *("nationalid", "nationalinsurance", "nhsnumber", "medicalrecord", "healthplan"),
    *("insurance", "casenumber", "accountnumber", "serialnumber", "licencenumber"),
    *("licensenumber", "passport", "accession", "patientid", "subjectid", "participantid"),
    *("personid", "lesionid", "studyid", "seriesid", "instanceuid", "sopuid", "ipaddress"),
    *("biometric", "voiceprint"),
)


def normalise(name: str) -> str:
    """A column name in lower case, letters and digits only (how the lists match)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _words(name: str) -> list[str]:
    """The words of a column name: split at non-letters and at camelCase boundaries."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return re.findall(r"[a-z]+", spaced.lower())


def identifying_reason(name: str) -> str | None:
    """Why a column or metadata key names a person directly, or ``None`` if it does not."""
    normalised = normalise(name)
    if normalised in _NEVER_NAMES:
        return f"{normalised!r} may hold a person's name or id"
    word = next((word for word in _words(name) if word in _NEVER_WORDS), None)
    if word is not None:
        return f"the word {word!r} marks a direct identifier"
    fragment = next((part for part in _NEVER_FRAGMENTS if part in normalised), None)
    if fragment is not None:
        return f"{fragment!r} marks a direct identifier"
    return None


def is_identifying_key(name: str) -> bool:
    """Whether a column or metadata key names a direct identifier (never kept or stored)."""
    return identifying_reason(name) is not None


@dataclass(frozen=True)
class MetadataAllowlist:
    """The normalised column names kept as case metadata: the default set plus ``extra``
    (made by :func:`metadata_allowlist`, which refuses identifying extras). A column that
    names a person is never kept, whatever ``extra`` holds."""

    extra: frozenset[str] = frozenset()

    def keeps(self, column: str) -> bool:
        normalised = normalise(column)
        allowed = normalised in DEFAULT_METADATA_ALLOWLIST or normalised in self.extra
        return allowed and not is_identifying_key(column)


def metadata_allowlist(extra: Iterable[str] = ()) -> MetadataAllowlist:
    """The default allowlist extended by ``extra`` column names (an :class:`ArchiveError`
    if one of them names a person directly)."""
    names = {part.strip(): normalise(part) for part in extra if normalise(part)}
    for written in names:
        reason = identifying_reason(written)
        if reason is not None:
            raise ArchiveError(
                f"{ALLOWLIST_VARIABLE} names {written!r}, which is never kept as case "
                f"metadata: {reason}; remove it from the list"
            )
    return MetadataAllowlist(frozenset(names.values()))


def metadata_allowlist_from_environment() -> MetadataAllowlist:
    """The allowlist of this deployment: the default set plus ``MEDRET_METADATA_ALLOWLIST``
    (comma-separated column names), read when an archive is read."""
    return metadata_allowlist(os.environ.get(ALLOWLIST_VARIABLE, "").split(","))


@dataclass(frozen=True)
class MetadataColumns:
    """Which columns of one label table become case metadata, and which were dropped."""

    kept: tuple[tuple[int, str], ...]  # (column index, metadata key)
    dropped: tuple[str, ...]  # names of the columns left out (never their values)

    def values(self, row: Sequence[str]) -> dict[str, str]:
        """The metadata of one row: the kept columns' non-empty cells, stripped."""
        return {key: row[i].strip() for i, key in self.kept if row[i].strip()}


def metadata_columns(
    header: Sequence[str],
    *,
    used: Collection[int | None] = (),
    keys: Mapping[str, str] | None = None,
    allowlist: MetadataAllowlist | None = None,
) -> MetadataColumns:
    """The metadata columns of a table: those not ``used`` otherwise (file, label, split,
    group, …) that the allowlist keeps (default: this deployment's,
    :func:`metadata_allowlist_from_environment`). ``keys`` renames kept columns (header
    name → metadata key); the others keep their header name."""
    policy = allowlist if allowlist is not None else metadata_allowlist_from_environment()
    renamed = keys or {}
    kept: list[tuple[int, str]] = []
    dropped: list[str] = []
    for i, name in enumerate(header):
        if i in used:
            continue
        if policy.keeps(name):
            kept.append((i, renamed.get(name, name)))
        else:
            dropped.append(name)
    return MetadataColumns(tuple(kept), tuple(dropped))
