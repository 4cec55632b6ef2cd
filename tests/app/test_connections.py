"""Connection limits of a live ``medret serve`` (issue #12): a client stalled mid-header or
trickling its body is answered 408 and disconnected, others are answered meanwhile, and
connections over the bound are refused at once instead of waiting for ever.

The server runs with short limits (1 s for headers, 1 s plus 1 s per 100 bytes for a body,
at most 12 connections), so each test takes a few seconds.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from support.http import multipart, parse_raw_answer
from support.server import LiveServer, log_problems, start_bare_server

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
BODY_MIN_BYTES_PER_S = 100
MAX_CONNECTIONS = 12
SLACK_S = 2.0  # scheduling on a loaded test machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("connections")
    with start_bare_server(
        data_dir,
        data_dir / "server.log",
        MEDRET_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        MEDRET_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        MEDRET_BODY_MIN_BYTES_PER_S=str(BODY_MIN_BYTES_PER_S),
        MEDRET_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
    ) as live:
        yield live


def connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=HEADER_TIMEOUT_S + SLACK_S + 3)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout, i.e.
    a connection the server kept open, fails the test)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            pytest.fail(f"the server kept the connection open; it sent {b''.join(chunks)!r}")
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def assert_answered(raw: bytes, status: int) -> str:
    """The raw answer is ``status`` with a JSON detail sentence and Connection: close."""
    code, headers, body = parse_raw_answer(raw)
    assert code == status, raw[:300]
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["request_id"] == headers["x-request-id"]
    assert len(answer["detail"].split()) >= 3
    return str(answer["detail"])


def wait_for_log(server: LiveServer, text: str) -> None:
    """The server logs ``text`` within the log's interval of 10 s."""
    deadline = time.monotonic() + 12
    while text not in server.log():
        assert time.monotonic() < deadline, f"not in the log: {text!r}\n{server.log()}"
        time.sleep(0.1)


def healthy_get(server: LiveServer) -> float:
    """Seconds GET /healthz took; it must be a 200."""
    started = time.perf_counter()
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    return time.perf_counter() - started


def test_stalled_headers_are_answered_408_while_others_are_served(server: LiveServer) -> None:
    stalled = [connect(server) for _ in range(MAX_CONNECTIONS // 2)]
    started = time.monotonic()
    try:
        for sock in stalled:
            sock.sendall(b"GET /healthz HT")  # half a request line, then nothing
        assert healthy_get(server) < 1.0  # the stalled ones do not hold up the others
        for sock in stalled:
            detail = assert_answered(read_until_closed(sock), 408)
            assert "headers" in detail
        elapsed = time.monotonic() - started
        assert HEADER_TIMEOUT_S * 0.9 <= elapsed < HEADER_TIMEOUT_S + SLACK_S
    finally:
        for sock in stalled:
            sock.close()
    wait_for_log(server, "connections closed: no complete headers within 1 s")
    assert not log_problems(server.log())


def test_a_keep_alive_connection_must_send_its_next_headers_in_time(server: LiveServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):  # the whole first answer
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")  # the next request stalls mid-header
        started = time.monotonic()
        assert_answered(read_until_closed(sock), 408)
        assert time.monotonic() - started < HEADER_TIMEOUT_S + SLACK_S


def upload_head(length: int) -> bytes:
    return (
        b"POST /query HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b0undary\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


def test_a_trickling_body_is_cut(server: LiveServer) -> None:
    body = multipart(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20_000)
    with connect(server) as sock:
        sock.sendall(upload_head(len(body)))
        started = time.monotonic()
        sent = 0
        sock.settimeout(0.25)
        answer = b""
        while time.monotonic() - started < BODY_TIMEOUT_S + SLACK_S + 3:
            try:
                sock.sendall(body[sent : sent + 10])  # 10 bytes every 0.25 s: 40 bytes/s
                sent += 10
                answer = sock.recv(65536)
                break  # the server answered (and closes)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(SLACK_S)
        answer += read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert answer, f"the server closed the connection without an answer after {elapsed:.1f} s"
    assert "too slowly" in assert_answered(answer, 408)
    assert BODY_TIMEOUT_S * 0.9 <= elapsed < BODY_TIMEOUT_S + SLACK_S
    assert sent < len(body)
    assert healthy_get(server) < 1.0
    assert not log_problems(server.log())


def test_a_slow_but_steady_upload_is_not_cut(server: LiveServer) -> None:
    """At 8 KB/s (above the minimum rate) a 20 KB upload takes 2.5 s, longer than the body
    timeout alone, and is still read to the end and answered by the app."""
    body = multipart(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20_000)
    with connect(server) as sock:
        sock.sendall(upload_head(len(body)))
        for offset in range(0, len(body), 800):
            sock.sendall(body[offset : offset + 800])
            time.sleep(0.1)
        status, _, _ = parse_raw_answer(sock.recv(65536))
    assert status == 503  # read in full, then: no index loaded on this bare server


def test_connections_over_the_bound_are_refused_and_the_service_recovers(
    server: LiveServer,
) -> None:
    stalled = [connect(server) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in stalled:
            sock.sendall(b"GET /")
        time.sleep(0.2)  # every stalled one has been accepted
        started = time.monotonic()
        with connect(server) as extra:
            detail = assert_answered(read_until_closed(extra), 503)
        assert "too many open connections" in detail
        assert time.monotonic() - started < 1.0  # refused at once, not queued
        for sock in stalled:  # the stalled ones are cut by the header timeout ...
            assert_answered(read_until_closed(sock), 408)
        assert healthy_get(server) < 1.0  # ... and the service answers again
    finally:
        for sock in stalled:
            sock.close()
    assert not log_problems(server.log())
