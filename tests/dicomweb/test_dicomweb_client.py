"""The DICOMweb client on its own: source names, multipart bodies, settings, and retries
against a real local HTTP server that misbehaves on purpose (no PACS needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dicomweb.client import DicomwebClient
from dicomweb.errors import (
    DicomwebError,
    InstanceNotFoundError,
    InstanceTooLargeError,
    PacsRefusedError,
    PacsUnavailableError,
    SourceError,
)
from dicomweb.multipart import related_body, split_parts
from dicomweb.refs import InstanceRef, parse_source
from dicomweb.settings import ClientSettings
from support.odd_pacs import listing_server, qido_entry, scripted_server

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"


def test_a_source_keeps_its_root_and_query_keys() -> None:
    source = parse_source("dicomweb+http://pacs:8042/dicom-web/?Modality=CR&StudyDate=2024-")
    assert source.root == "http://pacs:8042/dicom-web"
    assert source.query == (("Modality", "CR"), ("StudyDate", "2024-"))
    assert parse_source(source.text) == source


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("http://pacs/dicom-web", "not a DICOMweb source"),
        ("dicomweb+ftp://pacs/dicom-web", "not a DICOMweb source"),
        ("dicomweb+http://user:secret@pacs/dicom-web", "must not carry credentials"),
        ("dicomweb+http:///dicom-web", "names no host"),
        ("dicomweb+http://pacs:port/dicom-web", "bad port"),
        ("dicomweb+http://pacs/dicom-web?limit=5", "set by medret"),
    ],
)
def test_bad_sources_are_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(SourceError, match=says) as caught:
        parse_source(text)
    assert "secret" not in str(caught.value)


def test_an_instance_reference_round_trips_through_its_uri() -> None:
    ref = parse_source("dicomweb+https://pacs/wado/rs").instance(STUDY, SERIES, SOP)
    assert (
        ref.uri == f"dicomweb+https://pacs/wado/rs/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    )
    assert InstanceRef.from_uri(ref.uri) == ref
    assert InstanceRef.from_uri("/data/archive/a.dcm") is None
    assert InstanceRef.from_uri("dicomweb+http://pacs/studies/1.2/series/x/instances/3") is None
    with pytest.raises(SourceError, match="not a DICOM UID"):
        parse_source("dicomweb+http://pacs").instance("1.2", "../etc", "3")


def test_multipart_bodies_split_back_into_their_parts() -> None:
    items = [b"first\r\n--not-a-boundary", bytes(range(256)) * 3, b""]
    body, content_type = related_body(items)
    boundary = content_type.rsplit("boundary=", 1)[1]
    parts = split_parts(body, boundary)
    assert [content for _, content in parts] == items
    assert all(headers["content-type"] == "application/dicom" for headers, _ in parts)
    with pytest.raises(DicomwebError, match="cut short"):
        split_parts(body[: len(body) // 2], boundary)


def test_settings_refuse_half_credentials_and_never_show_secrets() -> None:
    with pytest.raises(SourceError, match="both"):
        ClientSettings.from_environment({"MEDRET_DICOMWEB_USERNAME": "u"})
    with pytest.raises(SourceError, match="not both"):
        ClientSettings(username="u", password="p", token="t")
    with pytest.raises(SourceError, match="not a number"):
        ClientSettings.from_environment({"MEDRET_DICOMWEB_TIMEOUT_S": "soon"})
    settings = ClientSettings.from_environment(
        {"MEDRET_DICOMWEB_USERNAME": "u", "MEDRET_DICOMWEB_PASSWORD": "hunter2-secret"}
    )
    assert "hunter2" not in repr(settings)


# --------------------------------------------------------------------------- a real server


def _client(root: str, **options: float) -> DicomwebClient:
    settings = ClientSettings(
        username="reader",
        password="pw-not-logged",
        timeout_s=options.get("timeout_s", 5.0),
        retries=int(options.get("retries", 3)),
        backoff_s=0.01,
    )
    return DicomwebClient(root, settings)


def _instance_body(data: bytes) -> tuple[str, bytes]:
    body, content_type = related_body([data])
    return content_type, body


def test_5xx_answers_are_retried_until_one_succeeds() -> None:
    content_type, body = _instance_body(b"DICM-bytes")
    answers = [
        (503, "text/plain", b"busy"),
        (502, "text/plain", b"gateway"),
        (200, content_type, body),
    ]
    with scripted_server(answers) as (root, requests), _client(root) as client:
        data = client.retrieve_instance(InstanceRef(root, STUDY, SERIES, SOP), max_bytes=1000)
    assert data == b"DICM-bytes"
    assert len(requests) == 3
    path, headers = requests[0]
    assert path == f"/dicom-web/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    assert headers["Accept"] == 'multipart/related; type="application/dicom"'
    assert headers["Authorization"].startswith("Basic ")


def test_a_server_that_keeps_failing_ends_in_pacs_unavailable() -> None:
    answers = [(500, "text/plain", b"internal error")]
    with (
        scripted_server(answers) as (root, requests),
        _client(root, retries=2) as client,
        pytest.raises(PacsUnavailableError, match="answered 500 3 time") as caught,
    ):
        client.search_instances()
    assert len(requests) == 3
    assert "pw-not-logged" not in str(caught.value)


def test_a_server_that_stops_answering_times_out() -> None:
    answers = [(200, "application/dicom+json", b"[]")]
    with (
        scripted_server(answers, delay_s=1.5) as (root, _),
        _client(root, timeout_s=0.3, retries=1) as client,
    ):
        started = time.perf_counter()
        with pytest.raises(PacsUnavailableError, match="did not answer within") as caught:
            client.search_instances()
    assert caught.value.timed_out
    assert time.perf_counter() - started < 1.5


def test_no_server_at_all_is_unavailable_not_an_os_error() -> None:
    with scripted_server([(200, "text/plain", b"")]) as (root, _):
        pass  # closed again: nothing listens on its port now
    with (
        _client(root, retries=1) as client,
        pytest.raises(PacsUnavailableError, match="cannot reach"),
    ):
        client.search_instances()
    assert not issubclass(PacsUnavailableError, OSError | ValueError)


@pytest.mark.parametrize(
    ("status", "error", "says"),
    [
        (404, InstanceNotFoundError, "404"),
        (401, PacsRefusedError, "MEDRET_DICOMWEB_USERNAME"),
        (400, PacsRefusedError, "answered 400"),
    ],
)
def test_client_errors_are_not_retried(status: int, error: type[Exception], says: str) -> None:
    answers = [(status, "text/plain", b"no")]
    with (
        scripted_server(answers) as (root, requests),
        _client(root) as client,
        pytest.raises(error, match=says),
    ):
        client.retrieve_instance(InstanceRef(root, STUDY, SERIES, SOP), max_bytes=100)
    assert len(requests) == 1


def test_an_instance_over_the_limit_is_refused_while_it_streams() -> None:
    content_type, body = _instance_body(b"x" * 200_000)
    with (
        scripted_server([(200, content_type, body)]) as (root, _),
        _client(root) as client,
        pytest.raises(InstanceTooLargeError),
    ):
        client.retrieve_instance(InstanceRef(root, STUDY, SERIES, SOP), max_bytes=1000)


def test_pages_are_followed_and_a_server_ignoring_offset_does_not_loop() -> None:
    def entry(sop: str) -> str:
        return (
            f'{{"0020000D": {{"vr": "UI", "Value": ["{STUDY}"]}}, '
            f'"0020000E": {{"vr": "UI", "Value": ["{SERIES}"]}}, '
            f'"00080018": {{"vr": "UI", "Value": ["{sop}"]}}}}'
        )

    same_page = f"[{entry('1.1')}, {entry('1.2')}]".encode()
    answers = [(200, "application/dicom+json", same_page)]  # every page the same
    with scripted_server(answers) as (root, requests), _client(root) as client:
        listed = list(client.iter_instances([("Modality", "CR")], page_size=2))
    assert [sop for _, _, sop in listed] == ["1.1", "1.2"]
    assert len(requests) == 2
    assert "Modality=CR" in requests[0][0]
    assert "offset=2" in requests[1][0]


def test_a_ca_bundle_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is not a file"):
        ClientSettings(ca_bundle=tmp_path / "missing.pem")


# --------------------------------------------------------------------------- odd servers


def test_a_server_that_caps_its_pages_is_still_listed_in_full() -> None:
    entries = [qido_entry(f"1.2.{i}") for i in range(250)]
    with listing_server(entries, cap=100) as (root, _), _client(root) as client:
        listed = list(client.iter_instances(page_size=1000))
    assert len(listed) == 250
    assert len({sop for _, _, sop in listed}) == 250


def test_a_malformed_entry_is_skipped_and_the_others_listed() -> None:
    entries = [
        qido_entry("1.2.1"),
        qido_entry("1.2.x/../y"),
        '{"00080018": {}}',
        qido_entry("1.2.3"),
    ]
    with listing_server(entries, cap=100) as (root, _), _client(root) as client:
        listed = [sop for _, _, sop in client.iter_instances()]
    assert listed == ["1.2.1", "1.2.3"]


def test_a_server_without_orthancs_system_route_is_no_orthanc() -> None:
    with listing_server([], cap=10) as (root, requests), _client(root) as client:
        assert client.orthanc_root() is None
    assert requests[0][0] == "/system"


def test_a_redirect_is_refused_not_followed_or_retried() -> None:
    answers = [(302, "text/html", b"<a href='/login'>login</a>")]
    with (
        scripted_server(answers) as (root, requests),
        _client(root) as client,
        pytest.raises(PacsRefusedError, match="redirect"),
    ):
        client.search_instances()
    assert len(requests) == 1


def test_a_body_that_does_not_decode_is_a_dicomweb_error() -> None:
    garbled = [(200, "application/dicom", b"not gzip at all")]
    with (
        scripted_server(garbled, headers={"Content-Encoding": "gzip"}) as (root, _),
        _client(root) as client,
        pytest.raises(DicomwebError, match="unusable"),
    ):
        client.retrieve_instance(InstanceRef(root, STUDY, SERIES, SOP), max_bytes=1000)


@pytest.mark.parametrize(
    "text",
    [
        "dicomweb+http://pacs:8042/dicom-web/../tools/execute-script",
        "dicomweb+http://pacs:8042/dicom-web/%2e%2e/tools",
        "dicomweb+http://pacs:8042/./dicom-web",
    ],
)
def test_dot_segments_in_a_source_are_refused(text: str) -> None:
    with pytest.raises(SourceError, match=r"no '\.' or '\.\.'"):
        parse_source(text)


@pytest.mark.parametrize(
    "key", ["PatientName", "PatientID", "00100020", "AccessionNumber", "ReferringPhysicianName"]
)
def test_query_keys_that_name_a_person_are_refused(key: str) -> None:
    with pytest.raises(SourceError, match="names a patient or a person"):
        parse_source(f"dicomweb+http://pacs/dicom-web?{key}=DOE")


def test_credentials_go_to_the_configured_pacs_only() -> None:
    with listing_server([], cap=10) as (root, requests):
        scoped = ClientSettings(token="t0ken", credentials_root="http://127.0.0.1:1/dicom-web")
        with DicomwebClient(root, scoped) as client:
            client.search_instances()
        own = ClientSettings(token="t0ken", credentials_root=root)
        with DicomwebClient(root, own) as client:
            client.search_instances()
    assert "Authorization" not in requests[0][1]
    assert requests[1][1]["Authorization"] == "Bearer t0ken"
