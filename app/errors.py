"""Domain errors → HTTP answers. Every error body is ``{"detail": "<sentence>", ...}``.

Only this module (and the routes) know HTTP status codes (house habit 6).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.logs import request_id_var
from imaging.decode import DecodeErrorKind, ImageDecodeError


class ApiError(Exception):
    """An answer other than success, with a sentence a person understands."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra


DECODE_STATUS = {
    DecodeErrorKind.NOT_AN_IMAGE: 415,
    DecodeErrorKind.UNSUPPORTED: 415,
    DecodeErrorKind.CORRUPT: 422,
    DecodeErrorKind.TOO_LARGE: 413,
    DecodeErrorKind.BUSY: 503,
}


def decode_error(exc: ImageDecodeError) -> ApiError:
    return ApiError(DECODE_STATUS[exc.kind], str(exc), error=f"image_{exc.kind.value}")


def error_body(detail: str, **extra: Any) -> dict[str, Any]:
    """Every error's JSON: the sentence, anything extra, and the request id."""
    return {"detail": detail, **extra, "request_id": request_id_var.get()}


def describe_validation_error(exc: RequestValidationError) -> str:
    """One sentence naming each bad parameter, e.g. "top_k: must be at most 100"."""
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path")]
        where = ".".join(loc) or "request"
        message = str(error.get("msg", "is invalid"))
        if error.get("type") == "missing":
            message = "is required"
        parts.append(f"{where}: {message}")
    return "bad request parameters — " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """JSON bodies for the errors FastAPI and the routes raise (an unexpected exception is
    answered by :class:`app.middleware.RequestContextMiddleware`, which knows the request
    id)."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.detail, **exc.extra), exc.status, headers=headers)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return JSONResponse(error_body(describe_validation_error(exc), errors=errors), 400)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = exc.headers
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such page or resource"
        elif exc.status_code == 405:
            detail = "this method is not allowed here"
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        elif exc.status_code == 400 and detail.startswith("There was an error parsing the body"):
            detail = "the request body could not be read as multipart/form-data"
        return JSONResponse(error_body(detail), exc.status_code, headers=headers)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def allowed_methods(request: Request) -> str:
    """Every method some route serves on the request's path (Starlette's 405 names only
    those of the first route that matched the path, e.g. POST of a GET + POST path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))
