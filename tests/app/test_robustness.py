"""No client input produces a 5xx (issue #5): corrupt uploads, size limits, bad
parameters, an empty database, the admin API's guards, and patient identifiers.

Every request goes through the in-process test client and, where it matters, through a
real ``medret serve`` (uvicorn) process whose log is then checked for tracebacks. Error
answers must be JSON with a ``detail`` sentence and the request id of the
``X-Request-ID`` header.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from corrupt_corpus import (
    PHI_STRINGS,
    CorpusFile,
    build_corpus,
    dicom_bytes,
    dicom_with_phi,
)
from fastapi.testclient import TestClient
from service_fixtures import (
    ADMIN_TOKEN,
    LiveServer,
    ServiceEnv,
    launch_server,
    start_server,
    stop_server,
)

from app.main import create_app
from app.services import Services

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CORPUS = build_corpus(SHARED_DATA if SHARED_DATA.is_dir() else None)
CORPUS_BY_NAME = {entry.name: entry for entry in CORPUS}

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<logger>[\w.]+) \[(?P<request_id>[^\]\s]+)\] "
)
ANNOUNCE = "medret serve: "
MiB = 2**20


# --------------------------------------------------------------------------- helpers


def assert_json_answer(response: httpx.Response, expected: frozenset[int] | set[int]) -> Any:
    """The status is expected (never 5xx), the body is JSON, errors carry a detail sentence,
    and the body's request id is the X-Request-ID header. 503 only where it is expected
    (no index loaded yet); any other 5xx fails."""
    status = response.status_code
    assert status < 500 or (status == 503 and set(expected) == {503}), response.text[:500]
    assert status in expected, f"expected {sorted(expected)}, got {status}: {response.text[:500]}"
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.headers.get("content-type"),
        response.text[:200],
    )
    body = response.json()
    if status >= 400:
        detail = body.get("detail")
        assert isinstance(detail, str), body
        assert len(detail.split()) >= 3, f"detail is not a sentence: {detail!r}"
        assert "Traceback" not in detail
    if "request_id" in body or status >= 400:
        assert body["request_id"] == response.headers["x-request-id"], body
    return body


def upload(api: httpx.Client, entry: CorpusFile, **params: Any) -> httpx.Response:
    return api.post("/query", files=entry.files(), params=params)


def vm_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def log_problems(text: str) -> list[str]:
    """Lines of a server log that are tracebacks, errors, or not in the house format."""
    bad = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(ANNOUNCE):
            continue
        match = LOG_LINE.match(line)
        if (
            match is None
            or "Traceback" in line
            or match.group(1) in ("ERROR", "CRITICAL")
            or (match.group("logger") == "app.access" and match.group("request_id") == "-")
        ):
            bad.append(line)
    return bad


def raw_http(url: str, head: bytes, body: bytes = b"", *, shut_write: bool = False) -> bytes:
    """Send bytes over a plain socket and read the answer until the server closes (or 10 s)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + body)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def parse_raw_answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return status, headers, body


def multipart(data: bytes, filename: str = "x.png", boundary: str = "b0undary") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def start_bare_server(data_dir: Path, log_path: Path, **extra_env: str) -> LiveServer:
    """``medret serve`` over `data_dir` (possibly empty) without an admin token, once
    /healthz answers."""
    variables = {
        "MEDRET_DATA_DIR": str(data_dir),
        "MEDRET_DATABASE_URL": f"sqlite:///{data_dir / 'medret.db'}",
        "MEDRET_RELOAD_INTERVAL_S": "0.3",
        **extra_env,
    }
    return launch_server(variables, log_path, ready_path="/healthz")


def services_of(client: TestClient) -> Services:
    services = client.app.state.services  # type: ignore[attr-defined]
    assert isinstance(services, Services)
    return services


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def asgi_client(service_env: ServiceEnv) -> Iterator[TestClient]:
    with TestClient(create_app(service_env.settings())) as client:
        yield client


@pytest.fixture(scope="module")
def robust_server(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A live server of its own, so its log holds only this module's requests."""
    server = start_server(service_env, tmp_path_factory.mktemp("robust") / "server.log")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def uvicorn_client(robust_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=robust_server.url, timeout=120) as client:
        yield client


@pytest.fixture(params=["asgi", "uvicorn"])
def api(request: pytest.FixtureRequest) -> httpx.Client:
    """The in-process test client, then an HTTP client of the real uvicorn process."""
    name = "asgi_client" if request.param == "asgi" else "uvicorn_client"
    client: httpx.Client = request.getfixturevalue(name)
    return client


@pytest.fixture(scope="module")
def small_limit_server(
    service_env: ServiceEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    log_path = tmp_path_factory.mktemp("limit") / "server.log"
    server = start_server(service_env, log_path, MEDRET_MAX_UPLOAD_MB="1")
    try:
        yield server
    finally:
        stop_server(server)


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


# --------------------------------------------------------------------------- size limits


def test_honest_oversized_upload_is_413_fast(small_limit_server: LiveServer) -> None:
    started = time.perf_counter()
    response = httpx.post(
        f"{small_limit_server.url}/query",
        files={"file": ("big.png", os.urandom(5 * MiB), "image/png")},
        timeout=30,
    )
    assert time.perf_counter() - started < 5
    body = assert_json_answer(response, {413})
    assert "1.0 MiB" in body["detail"]


def test_declared_oversize_is_refused_before_the_body_is_sent(
    small_limit_server: LiveServer,
) -> None:
    head = (
        b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"X-Request-ID: declared-5mib\r\nContent-Length: " + str(5 * MiB).encode() + b"\r\n\r\n"
    )
    status, headers, body = parse_raw_answer(raw_http(small_limit_server.url, head))
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["request_id"] == headers["x-request-id"] == "declared-5mib"


def test_chunked_50_mib_upload_is_cut_off_without_buffering_it(
    small_limit_server: LiveServer,
) -> None:
    pid = small_limit_server.process.pid
    url = f"{small_limit_server.url}/query"
    boundary = "streamboundary"
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield multipart(b"", "stream.png", boundary)[: -len(f"\r\n--{boundary}--\r\n")]
        chunk = os.urandom(MiB)
        for _ in range(50):
            sent += len(chunk)
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    httpx.get(f"{small_limit_server.url}/healthz")  # warm
    before = vm_rss_bytes(pid)
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        response = httpx.post(url, content=body(), headers=headers, timeout=60)
    except httpx.TransportError:  # the server may close the socket while we still write
        response = None
    after = vm_rss_bytes(pid)
    if response is not None:
        assert "content-length" not in response.request.headers
        assert_json_answer(response, {413})
    assert after - before < 16 * MiB, f"RSS grew by {(after - before) / MiB:.1f} MiB"
    assert small_limit_server.process.poll() is None
    assert httpx.get(f"{small_limit_server.url}/healthz").status_code == 200


def test_chunked_upload_over_the_limit_is_413_in_process(service_env: ServiceEnv) -> None:
    def body() -> Iterator[bytes]:
        yield multipart(b"", "s.png")[: -len("\r\n--b0undary--\r\n")]
        for _ in range(4):
            yield b"\x00" * MiB
        yield b"\r\n--b0undary--\r\n"

    with TestClient(create_app(service_env.settings(max_upload_mb=1))) as client:
        response = client.post(
            "/query",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"},
        )
        assert_json_answer(response, {413})
        # A Content-Length that understates the body: counted while streaming, still 413.
        response = client.post(
            "/query",
            content=multipart(b"\x00" * 3 * MiB),
            headers={
                "Content-Type": "multipart/form-data; boundary=b0undary",
                "Content-Length": "100",
            },
        )
        assert_json_answer(response, {400, 413})
        response = client.post(
            "/query",
            content=b"x",
            headers={"Content-Type": "multipart/form-data; boundary=b", "Content-Length": "abc"},
        )
        assert_json_answer(response, {400})


def test_lying_content_length_is_handled(small_limit_server: LiveServer) -> None:
    url = small_limit_server.url
    small = multipart(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    ctype = b"Content-Type: multipart/form-data; boundary=b0undary\r\n"
    # Claims more than it sends and keeps the socket open: others are still served.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as stalled:
        stalled.sendall(
            b"POST /query HTTP/1.1\r\nHost: x\r\n" + ctype + b"Content-Length: 500000\r\n\r\n"
        )
        stalled.sendall(small)
        started = time.perf_counter()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert time.perf_counter() - started < 2
    # Claims more than it sends, then stops writing: the server must not hang or fail.
    head = b"POST /query HTTP/1.1\r\nHost: x\r\n" + ctype + b"Content-Length: 500000\r\n\r\n"
    raw_http(url, head, small, shut_write=True)
    # Claims less than it sends: the rest is a malformed next request, refused by uvicorn.
    head = (
        b"POST /query HTTP/1.1\r\nHost: x\r\n" + ctype + b"Content-Length: 40\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = raw_http(url, head, small)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    # Over the limit with a tiny claim: counted while streaming.
    big = multipart(os.urandom(3 * MiB))
    head = (
        b"POST /query HTTP/1.1\r\nHost: x\r\n" + ctype + b"Content-Length: 200\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = raw_http(url, head, big)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    # Not a number: uvicorn or the middleware refuses it.
    head = b"POST /query HTTP/1.1\r\nHost: x\r\n" + ctype + b"Content-Length: 12abc\r\n\r\n"
    answer = raw_http(url, head, small, shut_write=True)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    time.sleep(0.5)
    assert small_limit_server.process.poll() is None
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert "Traceback" not in small_limit_server.log()


# --------------------------------------------------------------------------- parameters


BAD_QUERY_PARAMS: list[tuple[str, dict[str, Any], set[int], str]] = [
    ("top_k zero", {"top_k": 0}, {400}, "top_k"),
    ("top_k 101", {"top_k": 101}, {400}, "top_k"),
    ("top_k text", {"top_k": "abc"}, {400}, "top_k"),
    ("top_k negative", {"top_k": -5}, {400}, "top_k"),
    ("top_k huge", {"top_k": "9" * 40}, {400}, "top_k"),
    ("top_k float", {"top_k": "2.5"}, {400}, "top_k"),
    ("unknown collection", {"collection": "nope"}, {404}, "nope"),
    ("collection path", {"collection": "../../etc/passwd"}, {404}, "collection"),
    ("collection weird", {"collection": "d\u00e9rm'; DROP TABLE x;--\u202e"}, {404}, "collection"),
    ("collection too long", {"collection": "x" * 65}, {400}, "collection"),
    ("collection empty", {"collection": ""}, {400, 404}, ""),
    ("filter without colon", {"filter": "modality"}, {400}, "key:value"),
    ("filter empty value", {"filter": "modality:"}, {400}, "key:value"),
    ("filter empty key", {"filter": ":CR"}, {400}, "key:value"),
    ("filter weird key", {"filter": "a b;c:d"}, {200, 400}, ""),
    ("too many filters", {"filter": [f"k{i}:v" for i in range(30)]}, {400}, "filter"),
    ("label unknown", {"label": "NOPE"}, {200, 400}, ""),
    ("split too long", {"split": "s" * 40}, {400}, "split"),
    ("preview not a bool", {"preview": "maybe"}, {400}, "preview"),
]


@pytest.mark.parametrize(
    ("params", "expected", "fragment"),
    [pytest.param(p, e, f, id=i) for i, p, e, f in BAD_QUERY_PARAMS],
)
def test_bad_query_parameters(
    api: httpx.Client,
    ham_image: bytes,
    params: dict[str, Any],
    expected: set[int],
    fragment: str,
) -> None:
    response = api.post("/query", params=params, files={"file": ("q.jpg", ham_image)})
    body = assert_json_answer(response, expected)
    if response.status_code >= 400:
        assert fragment in body["detail"], body


BAD_REQUESTS: list[tuple[str, dict[str, Any], set[int]]] = [
    ("no file field", {"data": {"other": "x"}}, {400}),
    ("file as a text field", {"data": {"file": "not a file"}}, {400}),
    ("empty body", {"content": b""}, {400, 415}),
    ("json body", {"json": {"file": "aGVsbG8="}}, {400, 415}),
    (
        "urlencoded body",
        {
            "content": b"file=abc",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        {400, 415},
    ),
    (
        "multipart without boundary",
        {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}},
        {400},
    ),
    (
        "broken multipart",
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
            "headers": {"Content-Type": "multipart/form-data; boundary=b"},
        },
        {400, 415, 422},
    ),
    (
        "binary body, image content type",
        {"content": b"\x89PNG\r\n\x1a\n", "headers": {"Content-Type": "image/png"}},
        {400, 415},
    ),
    (
        "image with an empty filename",
        {
            "content": multipart(b"\x89PNG\r\n\x1a\n", filename=""),
            "headers": {"Content-Type": "multipart/form-data; boundary=b0undary"},
        },
        {400, 422},
    ),
    (
        "two files",
        {"files": [("file", ("a.bin", b"abc")), ("file", ("b.bin", b"def"))]},
        {400, 415},
    ),
    ("1500 files", {"files": [("file", ("a", b"x"))] * 1500}, {400}),
    (
        "1500 fields",
        {"data": {f"f{i}": "x" for i in range(1500)}, "files": {"file": ("a", b"x")}},
        {400},
    ),
    ("2 MiB text field", {"data": {"file": "x" * 2 * MiB}}, {400}),
    ("path as file name", {"files": {"file": ("../../etc/passwd\x00.png", b"x")}}, {415}),
    ("bidi file name", {"files": {"file": ("\u00e9\u202egnp.exe", b"x")}}, {415}),
]


@pytest.mark.parametrize(
    ("kwargs", "expected"), [pytest.param(k, e, id=i) for i, k, e in BAD_REQUESTS]
)
def test_malformed_query_requests(
    api: httpx.Client, kwargs: dict[str, Any], expected: set[int]
) -> None:
    assert_json_answer(api.post("/query", **kwargs), expected)


def test_wrong_methods_and_unknown_paths(api: httpx.Client) -> None:
    assert_json_answer(api.get("/query"), {405})
    assert_json_answer(api.put("/query", content=b"x"), {405})
    assert_json_answer(api.post("/healthz", content=b"x" * 1000), {405})
    assert_json_answer(api.get("/no/such/page"), {404})
    assert_json_answer(api.get("/admin"), {404})
    assert_json_answer(api.get("/static/../../etc/passwd"), {404})


BAD_CASE_IDS = [
    "-1",
    "0",
    "99999999999999999999999999",
    str(2**63),
    "abc",
    "1.5",
    "1e3",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e",
    "%00",
    "%20",
    "999999",
]


@pytest.mark.parametrize("case_id", BAD_CASE_IDS)
@pytest.mark.parametrize("suffix", ["", "/image", "/thumbnail"])
def test_bad_case_ids_are_4xx(api: httpx.Client, case_id: str, suffix: str) -> None:
    response = api.get(f"/cases/{case_id}{suffix}")
    assert_json_answer(response, {400, 404})


def test_a_real_case_and_its_pictures(api: httpx.Client, ham_image: bytes) -> None:
    hit = api.post("/query", files={"file": ("q.jpg", ham_image)}).json()["cases"][0]
    assert api.get(f"/cases/{hit['case_id']}").status_code == 200
    assert api.get(f"/cases/{hit['case_id']}/image").status_code == 200
    assert api.get(f"/cases/{hit['case_id']}/thumbnail").status_code == 200


# --------------------------------------------------------------------------- not ready


def test_empty_database_is_503_in_process(tmp_path: Path, ham_image: bytes) -> None:
    settings = ServiceEnv(tmp_path, f"sqlite:///{tmp_path / 'm.db'}", tmp_path, tmp_path, tmp_path)
    with TestClient(create_app(settings.settings(admin_token=None))) as client:
        check_not_ready(client, ham_image)


def test_empty_database_is_503_over_http(tmp_path: Path, ham_image: bytes) -> None:
    server = start_bare_server(tmp_path / "data", tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            check_not_ready(client, ham_image)
        assert server.process.poll() is None
    finally:
        stop_server(server)
    assert log_problems(server.log()) == []


def check_not_ready(client: httpx.Client, ham_image: bytes) -> None:
    body = assert_json_answer(client.post("/query", files={"file": ("q.jpg", ham_image)}), {503})
    assert "index" in body["detail"], body
    body = assert_json_answer(client.post("/query", files={"file": ("x", b"junk")}), {503})
    assert_json_answer(
        client.post("/query", params={"collection": "derm"}, files={"file": ("x", ham_image)}),
        {404, 503},
    )
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert client.get("/healthz").status_code == 200
    assert client.get("/collections").json() == []
    assert_json_answer(client.get("/cases/1"), {404})
    assert_json_answer(client.get("/cases/1/thumbnail"), {404})


# --------------------------------------------------------------------------- admin

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_admin_is_disabled_without_a_token(service_env: ServiceEnv) -> None:
    with TestClient(create_app(service_env.settings(admin_token=None))) as client:
        jobs_before = services_of(client).store.list_jobs()
        calls = [
            client.post(
                "/admin/reindex",
                json={"collection": "derm", "source": str(service_env.archive)},
                headers=AUTH,
            ),
            client.get(f"/admin/jobs/{uuid.uuid4()}", headers=AUTH),
            client.delete("/admin/cases/1", headers=AUTH),
            client.delete("/admin/cases/1"),
        ]
        for response in calls:
            body = assert_json_answer(response, {404})
            assert "disabled" in body["detail"], body
        assert services_of(client).store.list_jobs() == jobs_before


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong-token-0123456789",
        f"Basic {ADMIN_TOKEN}",
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"bearer  {ADMIN_TOKEN} extra",
        "Bearer \u00e9\u00e9\u00e9".encode("latin-1"),
    ],
)
def test_admin_wrong_token_is_401(
    asgi_client: TestClient, service_env: ServiceEnv, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    jobs_before = services_of(asgi_client).store.list_jobs()
    calls = [
        asgi_client.post(
            "/admin/reindex",
            json={"collection": "derm", "source": str(service_env.archive)},
            headers=headers,
        ),
        asgi_client.get(f"/admin/jobs/{uuid.uuid4()}", headers=headers),
        asgi_client.delete("/admin/cases/1", headers=headers),
    ]
    for response in calls:
        assert_json_answer(response, {401})
        assert response.headers["www-authenticate"] == "Bearer"
    assert services_of(asgi_client).store.list_jobs() == jobs_before


def _reindex_bodies(env: ServiceEnv) -> list[tuple[str, dict[str, Any], set[int]]]:
    root = env.archive_root
    return [
        ("dotdot relative", {"source": "../../etc"}, {400}),
        ("relative", {"source": "archives/ham"}, {400}),
        ("outside roots", {"source": "/etc"}, {403}),
        ("dotdot out of a root", {"source": f"{root}/../../../../etc"}, {403}),
        ("parent of the root", {"source": f"{root}/.."}, {403}),
        ("home", {"source": "~"}, {400, 403}),
        ("proc", {"source": "/proc/self/root/etc"}, {403}),
        ("null byte", {"source": f"{env.archive}\x00/etc"}, {400}),
        ("missing inside root", {"source": f"{root}/does-not-exist"}, {400}),
        ("empty source", {"source": ""}, {400}),
        ("checkpoint outside", {"source": str(env.archive), "checkpoint": "/etc/passwd"}, {403}),
        (
            "checkpoint dotdot",
            {"source": str(env.archive), "checkpoint": f"{root}/../../etc/passwd"},
            {403},
        ),
        ("collection path", {"collection": "../etc", "source": str(env.archive)}, {400}),
        ("collection new no ckpt", {"collection": "fresh", "source": str(env.archive)}, {400}),
        ("mode bogus", {"source": str(env.archive), "mode": "rm -rf"}, {400}),
        ("layout path", {"source": str(env.archive), "layout": "../x"}, {400}),
        ("source not a string", {"source": ["/etc"]}, {400}),
        ("source huge", {"source": "/" + "a" * 5000}, {400}),
    ]


def test_reindex_refuses_bad_sources_and_starts_nothing(
    asgi_client: TestClient, service_env: ServiceEnv
) -> None:
    services = services_of(asgi_client)
    jobs_before = services.store.list_jobs()
    for name, fields, expected in _reindex_bodies(service_env):
        payload = {"collection": "derm", **fields}
        response = asgi_client.post("/admin/reindex", json=payload, headers=AUTH)
        assert response.status_code in expected, (name, response.status_code, response.text)
        assert_json_answer(response, expected)
    for raw in (b"not json", b"{", b"[]", b"null", b'{"collection": 1}'):
        response = asgi_client.post(
            "/admin/reindex",
            content=raw,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert_json_answer(response, {400})
    assert services.store.list_jobs() == jobs_before
    assert services.launcher._children == {}


def test_admin_job_ids_are_validated(asgi_client: TestClient) -> None:
    for job_id in ("1", "..%2f..%2fetc%2fpasswd", "abc", "%00"):
        assert_json_answer(asgi_client.get(f"/admin/jobs/{job_id}", headers=AUTH), {400, 404})
    body = assert_json_answer(asgi_client.get(f"/admin/jobs/{uuid.uuid4()}", headers=AUTH), {404})
    assert "no job" in body["detail"]
    for case_id in ("-1", "0", "abc", str(2**70)):
        assert_json_answer(asgi_client.delete(f"/admin/cases/{case_id}", headers=AUTH), {400})
    assert_json_answer(asgi_client.delete("/admin/cases/99999999", headers=AUTH), {404})
    assert services_of(asgi_client).launcher._children == {}


# --------------------------------------------------------------------------- identifiers


def test_patient_identifiers_never_reach_answers_or_logs(
    robust_server: LiveServer, uvicorn_client: httpx.Client
) -> None:
    valid = dicom_bytes(dicom_with_phi())
    truncated = valid[: len(valid) - 1000]
    no_pixels = dicom_with_phi()
    del no_pixels.PixelData
    bogus_syntax = valid.replace(b"1.2.840.10008.1.2.1", b"1.2.3.4.5.6.7.8.9.0", 1)
    uploads = [
        ("phi-valid", valid, {200}),
        ("phi-truncated", truncated, {422}),
        ("phi-no-pixels", dicom_bytes(no_pixels), {422}),
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
    valid = dicom_bytes(dicom_with_phi())
    syntax = valid.replace(b"1.2.840.10008.1.2.1", b"DOE^JOHN PID-12345 ", 1)  # same length
    return [
        ("phi-in-sop-class-uid", dicom_bytes(no_pixels), {422}),
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
    server = start_server(service_env, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for request_id, data, expected in malformed_uid_uploads():
                response = client.post(
                    "/query",
                    files={"file": ("scan.dcm", data)},
                    headers={"X-Request-ID": request_id},
                )
                assert response.status_code in expected, response.text
    finally:
        stop_server(server)
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
    data = dicom_bytes(dicom_with_phi(np.full((32, 32), 7, np.uint8)))
    response = asgi_client.post("/query", files={"file": ("DOE_JOHN.dcm", data)})
    body = assert_json_answer(response, {200})
    assert body["query"]["format"] == "DICOM"
    for secret in PHI_STRINGS:
        assert secret not in response.text
