"""Pure ASGI middleware: request ids, access log and metrics, and the upload size limit.

The size limit is enforced while the body streams in: a declared ``Content-Length`` over
the limit is refused before a byte is read, and a body that grows past the limit (chunked
or lying about its length) is cut off as soon as it does. Starlette spools multipart file
parts to a temporary file, so even an allowed upload is never held twice in memory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from app.errors import error_body
from app.logs import REQUEST_ID_HEADER, new_request_id, request_id_var
from app.metrics import ServiceMetrics

log = logging.getLogger("app.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPART_SLACK = 64 * 1024  # multipart boundaries and part headers around the file
SMALL_BODY_LIMIT = 64 * 1024  # every request body but an upload (admin JSON)
UPLOAD_ROUTES = frozenset({"/query", "/explain"})  # the routes that take an image upload


class UploadTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        size = f"{limit / 2**20:.1f} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"
        super().__init__(
            413, f"the request body is larger than the limit of {size}; send a smaller one"
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def route_path(scope: Scope) -> str:
    """The request's path below the app's ``root_path`` (what the routes match): uvicorn's
    ``--root-path`` or a proxy prefix puts the prefix in front of ``scope["path"]``."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/cases/{case_id}``), never the raw path, so
    metrics have few label values and logs never carry what a client typed."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestContextMiddleware:
    """Request id in and out, one access-log line per request, latency metrics."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id(_header(scope, REQUEST_ID_HEADER.lower().encode()))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        started_response = False

        async def send_tracked(message: Message) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:  # a bug: answer here, where the request id is still known
            log.exception("unexpected error")
            if not started_response:
                await _refuse(
                    send_with_id,
                    500,
                    "the server failed to answer; the error is logged with this request id",
                )
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            self.metrics.requests.labels(route, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            log.info("%s %s → %d in %.1f ms", scope.get("method"), route, status, elapsed * 1e3)
            request_id_var.reset(token)


class UploadLimitMiddleware:
    """413 for request bodies over ``max_bytes`` (plus multipart framing), while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.upload_limit = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        uploads = route_path(scope) in UPLOAD_ROUTES
        limit = self.upload_limit if uploads else SMALL_BODY_LIMIT  # JSON bodies are small
        max_body = limit + MULTIPART_SLACK if uploads else limit
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _refuse(send, 400, "the Content-Length header is not a number")
                return
            if int(declared) > max_body:
                await _refuse(send, 413, UploadTooLarge(limit).detail)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise UploadTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps(error_body(detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
