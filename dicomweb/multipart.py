"""multipart/related bodies (RFC 2387), as WADO-RS answers and STOW-RS requests use them."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from dicomweb.errors import DicomwebError

DICOM = "application/dicom"


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type header."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if value:
                return value
    raise DicomwebError(f"multipart answer without a boundary (Content-Type {content_type!r})")


def split_parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The (headers, content) of each part of a multipart ``body``.

    Raises :class:`DicomwebError` for a body that is not multipart with ``boundary``.
    """
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0:
        raise DicomwebError("multipart answer without its boundary")
    parts: list[tuple[dict[str, str], bytes]] = []
    position = start + len(delimiter)
    while True:
        if body[position : position + 2] == b"--":  # the close delimiter
            return parts
        head_end = body.find(b"\r\n\r\n", position)
        if head_end < 0:
            raise DicomwebError("multipart part without the blank line after its headers")
        headers = _headers(body[position:head_end])
        content_start = head_end + 4
        end = body.find(b"\r\n" + delimiter, content_start)
        if end < 0:
            raise DicomwebError("multipart answer cut short (no closing boundary)")
        parts.append((headers, body[content_start:end]))
        position = end + 2 + len(delimiter)


def _headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def related_body(items: Iterable[bytes], content_type: str = DICOM) -> tuple[bytes, str]:
    """(body, Content-Type header) of a multipart/related request holding ``items``."""
    boundary = f"medret-{secrets.token_hex(16)}"
    chunks: list[bytes] = []
    for item in items:
        chunks += [f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(), item, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    header = f'multipart/related; type="{content_type}"; boundary={boundary}'
    return b"".join(chunks), header
