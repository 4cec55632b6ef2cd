"""Images named by reference: the UIDs of an instance in the configured PACS
(``MEDRET_DICOMWEB_URL``) instead of an uploaded file, and the links from a PACS case back
to its instance and to the clinical viewer.

``POST /query`` and ``POST /explain`` take either an uploaded ``file`` or ``study_uid`` +
``series_uid`` + ``instance_uid`` (multipart/urlencoded form fields, or a JSON body); the
instance is retrieved with WADO-RS and then decoded exactly like an upload. What the PACS
does wrong becomes an :class:`~app.errors.ApiError`: unknown UIDs 404, a PACS that times out
504, one that is down or refuses 502; never a 500, and never a credential in the detail.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request, UploadFile
from pydantic import ValidationError

from app.errors import ApiError
from app.schemas import DicomRefOut, ErrorOut, ReferenceIn
from app.services import Services
from dicomweb.client import shared_client
from dicomweb.errors import (
    DicomwebError,
    InstanceNotFoundError,
    InstanceTooLargeError,
    PacsRefusedError,
    PacsUnavailableError,
    SourceError,
)
from dicomweb.refs import InstanceRef, check_uid

UID_FIELDS = ("study_uid", "series_uid", "instance_uid")
JSON = "application/json"

REFERENCE_ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        400: "bad parameters, or UIDs given while no PACS is configured (MEDRET_DICOMWEB_URL)",
        404: "unknown collection, or the PACS holds no instance with these UIDs",
        422: "an undecodable file, a malformed UID, or a file and UIDs together",
        502: "the PACS refused the request, or did not answer after the retries",
        504: "the PACS did not answer in time",
    }.items()
}

M = TypeVar("M", bound=ReferenceIn)


@dataclass(frozen=True)
class Reference:
    """The UIDs of one instance, checked."""

    study_uid: str
    series_uid: str
    instance_uid: str


def reference_of(values: Mapping[str, object]) -> Reference | None:
    """The reference that ``values`` (form fields or a JSON body) name, ``None`` when they
    name none; 422 for some UIDs without the others, or one that is not a DICOM UID."""
    given = {name: values.get(name) for name in UID_FIELDS if values.get(name) not in (None, "")}
    if not given:
        return None
    missing = [name for name in UID_FIELDS if name not in given]
    if missing:
        raise ApiError(
            422,
            "an image by reference needs study_uid, series_uid and instance_uid together; "
            f"missing: {', '.join(missing)}",
        )
    checked = {}
    for name, value in given.items():
        if not isinstance(value, str):
            raise ApiError(422, f"{name} must be a DICOM UID written as text")
        try:
            checked[name] = check_uid(value, name)
        except SourceError as exc:
            raise ApiError(422, str(exc)) from None
    return Reference(**checked)


def chosen_image(file: UploadFile | None, reference: Reference | None) -> UploadFile | Reference:
    """The one image a request names: 422 for a file and UIDs together, 400 for neither."""
    if file is not None:
        if reference is not None:
            raise ApiError(
                422, "send either a file or study_uid, series_uid and instance_uid, not both"
            )
        return file
    if reference is None:
        raise ApiError(
            400,
            "bad request parameters — file: is required (or study_uid, series_uid and "
            "instance_uid of an instance in the PACS)",
        )
    return reference


def is_json(request: Request) -> bool:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == JSON


async def json_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; 422 when it is not one."""
    try:
        raw: Any = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "the JSON body cannot be parsed") from None
    if not isinstance(raw, dict) or not any(name in raw for name in UID_FIELDS):
        raise ApiError(
            400,
            "a JSON body names the image by study_uid, series_uid and instance_uid; "
            "upload a file as multipart/form-data instead",
        )
    reference_of(raw)  # the UIDs' own sentences first (some missing, malformed)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ())) or "body"
            message = "is required" if error.get("type") == "missing" else error["msg"]
            parts.append(f"{where}: {message}")
        raise ApiError(422, "bad JSON body — " + "; ".join(parts)) from None


def retrieved_instance(services: Services, reference: Reference) -> bytes:
    """The instance's Part-10 bytes from the configured PACS, within the upload limit
    (blocking: run it in the query pool)."""
    root = services.settings.dicomweb_url
    if root is None:
        raise ApiError(
            400,
            "no PACS is configured (MEDRET_DICOMWEB_URL is unset): an image by its UIDs "
            "cannot be fetched; upload the file instead",
        )
    ref = InstanceRef(root, reference.study_uid, reference.series_uid, reference.instance_uid)
    limit = services.settings.max_upload_bytes
    try:
        return shared_client(root).retrieve_instance(ref, max_bytes=limit)
    except InstanceNotFoundError:
        raise ApiError(
            404, f"the PACS holds no instance {reference.instance_uid} in that study and series"
        ) from None
    except InstanceTooLargeError:
        raise ApiError(
            413,
            f"instance {reference.instance_uid} is larger than the upload limit of {limit:,} bytes",
            error="image_too_large",
        ) from None
    except PacsUnavailableError as exc:
        raise pacs_error(exc) from None
    except DicomwebError as exc:
        raise pacs_error(exc) from None


def pacs_error(exc: DicomwebError) -> ApiError:
    """A PACS failure as an answer: 504 for a timeout, else 502 (the message names the
    server, never the credentials)."""
    if isinstance(exc, PacsUnavailableError):
        if exc.timed_out:
            return ApiError(504, f"the PACS did not answer in time: {exc}")
        return ApiError(502, f"the PACS is unavailable: {exc}")
    if isinstance(exc, PacsRefusedError):
        return ApiError(502, f"the PACS refused the request (HTTP {exc.status or '4xx'})")
    return ApiError(502, f"the PACS answered something unusable: {exc}")


def dicom_ref(source_uri: str) -> DicomRefOut | None:
    """The UIDs of a case indexed from a PACS, ``None`` for any other case."""
    ref = InstanceRef.from_uri(source_uri)
    if ref is None:
        return None
    return DicomRefOut(study_uid=ref.study, series_uid=ref.series, instance_uid=ref.sop)


def viewer_url(template: str | None, dicom: DicomRefOut | None) -> str | None:
    """The case in the clinical viewer, from ``MEDRET_VIEWER_URL_TEMPLATE``."""
    if template is None or dicom is None:
        return None

    def quoted(uid: str) -> str:
        return urllib.parse.quote(uid, safe="")

    return template.format(
        study_uid=quoted(dicom.study_uid),
        series_uid=quoted(dicom.series_uid),
        instance_uid=quoted(dicom.instance_uid),
    )
