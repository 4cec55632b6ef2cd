"""HTTP for the service tests: the error-answer contract, and requests written by hand.

:func:`assert_json_answer` is what every answer of the service must be (issue #5): the
expected status and never an unexpected 5xx, a JSON body, a ``detail`` sentence on errors
and the ``X-Request-ID`` header's id in the body. :func:`raw_http` sends bytes an HTTP
client library would refuse to send (lying ``Content-Length``, half-closed sockets).
"""

from __future__ import annotations

import socket
from typing import Any

import httpx


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
    """A multipart/form-data body with ``data`` as its one ``file`` field."""
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
