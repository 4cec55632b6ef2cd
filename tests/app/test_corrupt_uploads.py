"""No corrupt upload produces a 5xx (issue #5), and no patient identifier in one reaches
an answer or a log.

Every corpus file goes through the in-process test client and through a real
``medret serve`` (uvicorn) process whose log is then checked for tracebacks. Error
answers must be JSON with a ``detail`` sentence and the request id of the
``X-Request-ID`` header (:func:`support.http.assert_json_answer`).
"""

from __future__ import annotations

import concurrent.futures
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from corrupt_corpus import (
    PHI_STRINGS,
    CorpusFile,
    build_corpus,
    dicom_with_phi,
)
from fastapi.testclient import TestClient

from support.dicom import to_bytes
from support.http import assert_json_answer
from support.server import LiveServer, log_problems, start_server
from support.service import ServiceEnv

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CORPUS = build_corpus(SHARED_DATA if SHARED_DATA.is_dir() else None)
CORPUS_BY_NAME = {entry.name: entry for entry in CORPUS}


def upload(api: httpx.Client, entry: CorpusFile, **params: Any) -> httpx.Response:
    return api.post("/query", files=entry.files(), params=params)


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_large_and_varied() -> None:
    assert len(CORPUS) >= 40
    expected = {status for entry in CORPUS for status in entry.expected}
    assert {200, 413, 415, 422} <= expected


@pytest.mark.parametrize("name", list(CORPUS_BY_NAME))
def test_corpus_file_gets_its_status(api: httpx.Client, name: str) -> None:
    entry = CORPUS_BY_NAME[name]
    body = assert_json_answer(upload(api, entry), entry.expected)
    if 200 in entry.expected and "cases" in body:
        assert body["cases"], body


def test_live_server_survives_the_corpus_sent_concurrently(
    robust_server: LiveServer, uvicorn_client: httpx.Client
) -> None:
    """Every corpus file three times, eight at a time: same answers, the process lives on,
    and its log holds no traceback and no line outside the house format."""
    jobs = [entry for entry in CORPUS for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda entry: upload(uvicorn_client, entry), jobs))
    for entry, response in zip(jobs, answers, strict=True):
        assert response.status_code in entry.expected, (entry.name, response.text[:300])
    assert robust_server.process.poll() is None
    assert uvicorn_client.get("/healthz").status_code == 200
    assert uvicorn_client.get("/readyz").status_code == 200
    log = robust_server.log()
    assert "Traceback" not in log
    assert log_problems(log) == []


# --------------------------------------------------------------------------- identifiers


def test_patient_identifiers_never_reach_answers_or_logs(
    robust_server: LiveServer, uvicorn_client: httpx.Client
) -> None:
    valid = to_bytes(dicom_with_phi())
    truncated = valid[: len(valid) - 1000]
    no_pixels = dicom_with_phi()
    del no_pixels.PixelData
    bogus_syntax = valid.replace(b"1.2.840.10008.1.2.1", b"1.2.3.4.5.6.7.8.9.0", 1)
    uploads = [
        ("phi-valid", valid, {200}),
        ("phi-truncated", truncated, {422}),
        ("phi-no-pixels", to_bytes(no_pixels), {422}),
        ("phi-bogus-syntax", bogus_syntax, {415}),
    ]
    for request_id, data, expected in uploads:
        response = uvicorn_client.post(
            "/query",
            files={"file": ("DOE_JOHN.dcm", data, "application/dicom")},
            headers={"X-Request-ID": request_id},
            params={"preview": "true"},
        )
        body = assert_json_answer(response, expected)
        assert response.headers["x-request-id"] == request_id == body["request_id"]
        for secret in PHI_STRINGS:
            assert secret not in response.text, (request_id, secret, response.text[:500])
    # An identifier offered as the request id is replaced, never logged.
    response = uvicorn_client.post(
        "/query",
        files={"file": ("DOE_JOHN.dcm", truncated)},
        headers={"X-Request-ID": "DOE^JOHN PID-12345"},
    )
    body = assert_json_answer(response, {422})
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"]), body["request_id"]
    time.sleep(0.3)  # let the access log line be written
    log = robust_server.log()
    for secret in PHI_STRINGS:
        assert secret not in log, f"{secret!r} in the server log"
    for request_id, _, _ in uploads:
        assert f"[{request_id}]" in log
    assert f"[{body['request_id']}]" in log
    assert log_problems(log) == []


def malformed_uid_uploads() -> list[tuple[str, bytes, set[int]]]:
    """Identifiers where a UID belongs: pydicom's validation warning quotes the value."""
    no_pixels = dicom_with_phi()
    del no_pixels.PixelData
    no_pixels.SOPClassUID = "DOE^JOHN PID-12345"
    valid = to_bytes(dicom_with_phi())
    syntax = valid.replace(b"1.2.840.10008.1.2.1", b"DOE^JOHN PID-12345 ", 1)  # same length
    return [
        ("phi-in-sop-class-uid", to_bytes(no_pixels), {422}),
        ("phi-in-transfer-syntax-uid", syntax, {415}),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["sop-class-uid", "transfer-syntax-uid"])
def test_identifiers_in_malformed_uids_never_reach_answers(api: httpx.Client, index: int) -> None:
    request_id, data, expected = malformed_uid_uploads()[index]
    response = api.post(
        "/query", files={"file": ("scan.dcm", data)}, headers={"X-Request-ID": request_id}
    )
    assert_json_answer(response, expected)
    for secret in PHI_STRINGS:
        assert secret not in response.text, (request_id, response.text)


def test_identifiers_in_malformed_uids_never_reach_the_log(
    service_env: ServiceEnv, tmp_path: Path
) -> None:
    with (
        start_server(service_env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for request_id, data, expected in malformed_uid_uploads():
            response = client.post(
                "/query",
                files={"file": ("scan.dcm", data)},
                headers={"X-Request-ID": request_id},
            )
            assert response.status_code in expected, response.text
    log = server.log()
    leaked = [line for line in log.splitlines() if any(s in line for s in PHI_STRINGS)]
    assert leaked == [], "\n".join(leaked)


def test_request_id_header_matches_body_everywhere(api: httpx.Client) -> None:
    for response in (
        api.get("/cases/0"),
        api.get("/nope"),
        api.post("/query", files={"file": ("x", b"")}),
        api.post("/query", params={"top_k": 0}, files={"file": ("x", b"")}),
        api.post("/query", headers={"X-Request-ID": "x" * 65}, files={"file": ("x", b"")}),
        api.post("/query", headers={"X-Request-ID": "ok-id.1_2"}, files={"file": ("x", b"")}),
    ):
        body = assert_json_answer(response, {400, 404, 415})
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", body["request_id"])
    assert body["request_id"] == "ok-id.1_2"


def test_query_of_a_valid_dicom_has_no_identifiers_in_metadata(
    asgi_client: TestClient,
) -> None:
    data = to_bytes(dicom_with_phi(np.full((32, 32), 7, np.uint8)))
    response = asgi_client.post("/query", files={"file": ("DOE_JOHN.dcm", data)})
    body = assert_json_answer(response, {200})
    assert body["query"]["format"] == "DICOM"
    for secret in PHI_STRINGS:
        assert secret not in response.text
