"""The one HTTP client medret uses to talk to a PACS: QIDO-RS, WADO-RS, Orthanc's REST API.

Every request has the timeout of :class:`~dicomweb.settings.ClientSettings`, is retried
with exponential back-off when the connection fails, times out or the server answers 5xx
(or 429), and turns what is left into one of :mod:`dicomweb.errors`. TLS certificates are
always verified. Credentials are sent as HTTP basic or bearer authorisation and appear in
no message.

An ``httpx.Client`` is thread-safe and keeps connections open; :func:`shared_client`
hands out one per process and source root (the indexer's decoding workers each get
their own after they start).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from dicomweb.errors import (
    DicomwebError,
    InstanceNotFoundError,
    InstanceTooLargeError,
    PacsRefusedError,
    PacsUnavailableError,
)
from dicomweb.multipart import DICOM, boundary_of, split_parts
from dicomweb.refs import InstanceRef, Source, check_uid
from dicomweb.settings import ClientSettings

log = logging.getLogger(__name__)

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_ACCEPT_DICOM = f'multipart/related; type="{DICOM}"'
# Instances are asked for uncompressed: gzip of pixel data saves little and costs both ends
# CPU (with Orthanc on the same two cores, it cut loopback retrieval from 130 to 440/s).
_RETRIEVE_HEADERS = {"Accept": _ACCEPT_DICOM, "Accept-Encoding": "identity"}
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around an instance
_JSON_LIMIT = 256 * 2**20  # the most a listing or a REST answer may hold


class DicomwebClient:
    """QIDO-RS search, WADO-RS retrieval and (for Orthanc) the change feed of one server."""

    def __init__(self, root: str, settings: ClientSettings | None = None) -> None:
        self.root = root.rstrip("/")
        self.settings = settings or ClientSettings.from_environment()
        s = self.settings
        auth: httpx.Auth | None = None
        headers = {"User-Agent": "medret"}
        if not s.credentials_for(self.root):
            log.warning("%s is not the PACS of MEDRET_DICOMWEB_URL: no credentials sent", root)
        elif s.username is not None and s.password is not None:
            auth = httpx.BasicAuth(s.username, s.password)
        elif s.token is not None:
            headers["Authorization"] = f"Bearer {s.token}"
        verify: ssl.SSLContext | bool = True
        if s.ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(s.ca_bundle))
        self._http = httpx.Client(
            auth=auth,
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(s.timeout_s),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DicomwebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ QIDO-RS

    def search_instances(
        self, query: Sequence[tuple[str, str]] = (), *, limit: int = 1000, offset: int = 0
    ) -> list[tuple[str, str, str]]:
        """One page of ``GET /instances``: (study, series, SOP instance) UIDs."""
        params = [*query, ("limit", str(limit)), ("offset", str(offset))]
        params += [("includefield", tag) for tag in (STUDY_UID, SERIES_UID)]
        response = self._request(
            "GET", f"{self.root}/instances", params=params, max_bytes=_JSON_LIMIT
        )
        if response.status_code == 204 or not response.content:
            return []
        entries = _json(response, "QIDO-RS answer")
        if not isinstance(entries, list):
            raise DicomwebError(f"{self.root}/instances answered JSON that is not a list")
        listed = []
        for entry in entries:
            try:
                listed.append(_uids(entry))
            except DicomwebError as exc:  # one odd entry must not hide all the others
                log.warning("%s/instances: an entry skipped: %s", self.root, exc)
        return listed

    def iter_instances(
        self, query: Sequence[tuple[str, str]] = (), *, page_size: int = 1000
    ) -> Iterator[tuple[str, str, str]]:
        """Every instance that matches ``query``, page by page (limit/offset), each once."""
        seen: set[str] = set()
        offset = 0
        while True:
            page = self.search_instances(query, limit=page_size, offset=offset)
            fresh = [uids for uids in page if uids[2] not in seen]
            for uids in fresh:
                seen.add(uids[2])
                yield uids
            # an empty page is the end (a server may cap pages below page_size, so a short
            # page is not); a page of only repeats means the server ignores offset
            if not page or not fresh:
                return
            offset += len(page)

    # ------------------------------------------------------------------ WADO-RS

    def retrieve_instance(self, ref: InstanceRef, max_bytes: int) -> bytes:
        """The Part-10 bytes of one instance (WADO-RS), refusing more than ``max_bytes``."""
        url = f"{ref.root}/{ref.path}"
        response = self._request(
            "GET", url, headers=_RETRIEVE_HEADERS, max_bytes=max_bytes + _MULTIPART_SLACK
        )
        content_type = response.headers.get("content-type", "")
        body = response.content
        if content_type.lower().startswith(DICOM):
            data = body
        else:
            parts = split_parts(body, boundary_of(content_type))
            dicom = [part for headers, part in parts if _is_dicom(headers)]
            if len(dicom) != 1:
                raise DicomwebError(
                    f"{url}: expected one application/dicom part, got {len(dicom)} of "
                    f"{len(parts)} parts"
                )
            data = dicom[0]
        if len(data) > max_bytes:
            raise InstanceTooLargeError(f"instance {ref.sop} is over {max_bytes:,} bytes")
        return data

    # ------------------------------------------------------------------ Orthanc

    def orthanc_root(self) -> str | None:
        """The root of Orthanc's own REST API if this server is an Orthanc, else ``None``.

        Orthanc serves DICOMweb under ``<root>/dicom-web``; its ``<root>/system`` answers
        JSON with ``Name`` and ``ApiVersion``.
        """
        parts = urllib.parse.urlsplit(self.root)
        parent = parts.path.rsplit("/", 1)[0]
        candidate = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parent, "", ""))
        try:
            response = self._request(
                "GET", f"{candidate}/system", expect_json=True, max_bytes=_JSON_LIMIT
            )
        except (PacsRefusedError, InstanceNotFoundError, InstanceTooLargeError):
            return None  # a 4xx (or no such path): some other DICOMweb server
        try:
            system = response.json()
        except ValueError:
            return None
        if isinstance(system, dict) and "ApiVersion" in system and "Name" in system:
            return candidate
        return None

    def orthanc_json(self, url: str, params: Mapping[str, str] | None = None) -> Any:
        """The JSON answer of a GET on Orthanc's REST API (``url`` absolute)."""
        answer = self._request("GET", url, params=params, expect_json=True, max_bytes=_JSON_LIMIT)
        return _json(answer, url)

    # ------------------------------------------------------------------ plumbing

    def _request(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] | Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
        expect_json: bool = False,
    ) -> Answer:
        s = self.settings
        if expect_json:
            headers = {"Accept": "application/json", **(headers or {})}
        for attempt in range(s.retries + 1):
            last = attempt == s.retries
            try:
                response = self._send(method, url, params, headers, max_bytes)
            except httpx.TimeoutException as exc:
                if last:
                    raise PacsUnavailableError(
                        f"{_where(url)} did not answer within {s.timeout_s:g} s "
                        f"({s.retries + 1} attempt(s)): {type(exc).__name__}",
                        timed_out=True,
                    ) from None
            except httpx.TransportError as exc:
                if last:
                    raise PacsUnavailableError(
                        f"cannot reach {_where(url)} ({s.retries + 1} attempt(s)): {exc}"
                    ) from None
            except httpx.HTTPError as exc:  # e.g. a body that does not decode as it says
                raise DicomwebError(
                    f"{_where(url)} answered something unusable: {type(exc).__name__}"
                ) from None
            else:
                status = response.status_code
                if status < 300:
                    return response
                if status < 400:
                    raise PacsRefusedError(
                        f"{_where(url)} answered {status} (a redirect, e.g. to a login page); "
                        "medret follows no redirects: give the server's own DICOMweb root",
                        status,
                    )
                if status == 404:
                    raise InstanceNotFoundError(f"{_where(url)} answered 404: not found")
                if status in (401, 403):
                    raise PacsRefusedError(
                        f"{_where(url)} refused the request ({status}): check "
                        "MEDRET_DICOMWEB_USERNAME/PASSWORD or MEDRET_DICOMWEB_TOKEN",
                        status,
                    )
                if status not in _RETRIED_STATUSES:
                    raise PacsRefusedError(
                        f"{_where(url)} answered {status}: {_snippet(response)}", status
                    )
                if last:
                    raise PacsUnavailableError(
                        f"{_where(url)} answered {status} {s.retries + 1} time(s): "
                        f"{_snippet(response)}",
                        timed_out=status == 504,
                    )
            delay = s.backoff_s * 2**attempt
            log.info("%s: retrying in %.1f s (attempt %d)", _where(url), delay, attempt + 2)
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        method: str,
        url: str,
        params: Sequence[tuple[str, str]] | Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        max_bytes: int | None,
    ) -> Answer:
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params or [])
        query = httpx.QueryParams([(str(k), str(v)) for k, v in pairs])
        request = self._http.build_request(method, url, params=query, headers=headers)
        response = self._http.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise InstanceTooLargeError(f"{_where(url)}: answer over {max_bytes:,} bytes")
                chunks.append(chunk)
        finally:
            response.close()
        return Answer(response.status_code, response.headers, b"".join(chunks))


@dataclass(frozen=True)
class Answer:
    """A server's answer, its body read in full (within the caller's byte limit)."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


_clients: dict[tuple[int, str], DicomwebClient] = {}
_clients_lock = threading.Lock()


def shared_client(root: str) -> DicomwebClient:
    """This process's client for ``root``, made on first use with the environment's
    settings (a forked worker makes its own: connections are not shared across fork)."""
    key = (os.getpid(), root.rstrip("/"))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = DicomwebClient(root)
        return client


def fetch_instance(ref: InstanceRef, max_bytes: int) -> bytes:
    """The instance's Part-10 bytes, through :func:`shared_client`."""
    return shared_client(ref.root).retrieve_instance(ref, max_bytes)


def list_instances(source: Source, *, page_size: int = 1000) -> list[InstanceRef]:
    """Every instance of ``source`` (its query keys applied), in the server's order."""
    client = shared_client(source.root)
    return [
        source.instance(study, series, sop)
        for study, series, sop in client.iter_instances(source.query, page_size=page_size)
    ]


# --------------------------------------------------------------------------- helpers


def _uids(entry: object) -> tuple[str, str, str]:
    if not isinstance(entry, dict):
        raise DicomwebError("a QIDO-RS entry is not a JSON object")

    def value(tag: str, what: str) -> str:
        element = entry.get(tag)
        values = element.get("Value") if isinstance(element, dict) else None
        if not (isinstance(values, list) and values and isinstance(values[0], str)):
            raise DicomwebError(f"a QIDO-RS entry has no {what} ({tag})")
        return check_uid(values[0], what)

    return (
        value(STUDY_UID, "StudyInstanceUID"),
        value(SERIES_UID, "SeriesInstanceUID"),
        value(SOP_UID, "SOPInstanceUID"),
    )


def _json(response: Answer, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise DicomwebError(f"{what}: the answer is not JSON") from None


def _is_dicom(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", DICOM).lower().startswith(DICOM)


def _where(url: str) -> str:
    """``url`` without its query string (which may hold a patient's attributes)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _snippet(response: Answer) -> str:
    text = response.content[:200].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or "(no body)"
