"""Upload size limits (issue #5): an upload over ``MEDRET_MAX_UPLOAD_MB`` is 413, whether
its ``Content-Length`` is honest, missing (chunked), too small or not a number, and the
server neither buffers it nor hangs on a body that never comes."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator

import httpx
from fastapi.testclient import TestClient

from app.main import create_app
from support.http import assert_json_answer, multipart, parse_raw_answer, raw_http
from support.server import LiveServer, vm_rss_bytes
from support.service import ServiceEnv

MiB = 2**20


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
