"""Names of a DICOMweb source and of one instance in it, as text the indexer stores.

A *source* is ``dicomweb+http://host:port/path`` or ``dicomweb+https://…`` (the DICOMweb
root, e.g. Orthanc's ``/dicom-web``), optionally with QIDO-RS query keys in the query
string (``?Modality=CR&StudyDate=20240101-``). Credentials never appear in it: they come
from the environment (:mod:`dicomweb.settings`), and a URL that carries a user or password
is refused.

An *instance reference* is the source's root plus the instance's UIDs; its :attr:`uri`
(``dicomweb+http://host/dicom-web/studies/S/series/R/instances/I``) is the case's
``source_uri``, from which the service fetches the case's image again and links back.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from dicomweb.errors import SourceError

SCHEME_PREFIX = "dicomweb+"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_INSTANCE_PATH = re.compile(
    r"^(?P<root>.*)/studies/(?P<study>[0-9.]+)/series/(?P<series>[0-9.]+)"
    r"/instances/(?P<sop>[0-9.]+)$"
)


# Query keys refused in a source (by keyword or tag): they would copy a patient's
# attributes into every place the source is written.
_PERSON_KEYS = (
    "patient",
    "00100",
    "00101",
    "accessionnumber",
    "00080050",
    "physician",
    "operator",
    "studyid",
    "00200010",
    "issuerofpatient",
    "00380010",
)


def _names_a_person(key: str) -> bool:
    lowered = key.lower().replace("_", "").replace(" ", "")
    return any(lowered.startswith(marker) or marker in lowered for marker in _PERSON_KEYS)


def is_dicomweb(text: str) -> bool:
    """Whether ``text`` names a DICOMweb source (``dicomweb+http(s)://``)."""
    return text.startswith((f"{SCHEME_PREFIX}http://", f"{SCHEME_PREFIX}https://"))


def check_uid(value: str, what: str = "UID") -> str:
    """``value`` if it is a DICOM UID (digits and dots, at most 64 characters)."""
    if not (0 < len(value) <= 64 and _UID.match(value)):
        raise SourceError(f"{what} {value[:80]!r} is not a DICOM UID (digits and dots, ≤ 64)")
    return value


@dataclass(frozen=True)
class Source:
    """A parsed source: the HTTP root of its DICOMweb API and its QIDO-RS query keys."""

    root: str  # http(s)://host:port/path, no trailing slash
    query: tuple[tuple[str, str], ...] = field(default=())

    @property
    def text(self) -> str:
        """The source as the operator writes it (``dicomweb+…``, query keys included)."""
        suffix = f"?{urllib.parse.urlencode(self.query)}" if self.query else ""
        return f"{SCHEME_PREFIX}{self.root}{suffix}"

    @property
    def origin(self) -> str:
        """``scheme://host:port`` of the server."""
        parts = urllib.parse.urlsplit(self.root)
        return f"{parts.scheme}://{parts.netloc}"

    def instance(self, study: str, series: str, sop: str) -> InstanceRef:
        return InstanceRef(self.root, check_uid(study), check_uid(series), check_uid(sop))


def parse_source(text: str) -> Source:
    """The :class:`Source` that ``text`` names, or :class:`SourceError` saying why not."""
    if not is_dicomweb(text):
        raise SourceError(
            f"{text[:200]!r} is not a DICOMweb source: write dicomweb+http://host:port/path "
            "or dicomweb+https://…"
        )
    parts = urllib.parse.urlsplit(text[len(SCHEME_PREFIX) :])
    if parts.username is not None or parts.password is not None:
        raise SourceError(
            "a DICOMweb source must not carry credentials; set MEDRET_DICOMWEB_USERNAME and "
            "MEDRET_DICOMWEB_PASSWORD (or MEDRET_DICOMWEB_TOKEN) in the environment instead"
        )
    if not parts.hostname:
        raise SourceError(f"DICOMweb source {text[:200]!r} names no host")
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise SourceError(f"DICOMweb source {text[:200]!r} has a bad port") from None
    if parts.fragment:
        raise SourceError(f"DICOMweb source {text[:200]!r} must not have a #fragment")
    segments = urllib.parse.unquote(parts.path).split("/")
    if any(segment in (".", "..") for segment in segments) or "\\" in parts.path:
        raise SourceError(f"DICOMweb source {text[:200]!r}: no '.' or '..' in its path")
    query = tuple(urllib.parse.parse_qsl(parts.query, keep_blank_values=False))
    for key, _ in query:
        if key.lower() in {"limit", "offset", "includefield"}:
            raise SourceError(f"query key {key!r} is set by medret itself; leave it out")
        if _names_a_person(key):
            raise SourceError(
                f"query key {key!r} names a patient or a person: a source is written in "
                "job records, logs and process lists, so select by study-level keys "
                "(Modality, StudyDate, BodyPartExamined, …) or UIDs"
            )
    root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return Source(root, query)


@dataclass(frozen=True)
class InstanceRef:
    """One instance of a DICOMweb server, by its UIDs."""

    root: str  # the DICOMweb root, http(s)://host:port/path
    study: str
    series: str
    sop: str

    @property
    def path(self) -> str:
        return f"studies/{self.study}/series/{self.series}/instances/{self.sop}"

    @property
    def uri(self) -> str:
        """``dicomweb+<root>/studies/…/series/…/instances/…``: the stored ``source_uri``."""
        return f"{SCHEME_PREFIX}{self.root}/{self.path}"

    @classmethod
    def from_uri(cls, uri: str) -> InstanceRef | None:
        """The reference a :attr:`uri` names, or ``None`` if ``uri`` is not one."""
        if not is_dicomweb(uri):
            return None
        match = _INSTANCE_PATH.match(uri[len(SCHEME_PREFIX) :])
        if match is None:
            return None
        try:
            return cls(
                match["root"],
                check_uid(match["study"]),
                check_uid(match["series"]),
                check_uid(match["sop"]),
            )
        except SourceError:
            return None
