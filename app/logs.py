"""Logging with a request id on every line.

Each request gets an id (the client's ``X-Request-ID`` when it is a short safe token,
otherwise a fresh one), kept in a context variable; a logging filter stamps it on every
record emitted while the request is handled, including from worker threads that copy the
context. Log lines never carry upload file names, client addresses or DICOM identifiers.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid
import warnings

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def new_request_id(offered: str | None) -> str:
    """The client's id if it is safe to log as is, otherwise a fresh random one."""
    if offered and _SAFE_ID.match(offered):
        return offered
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(level: str = "INFO") -> None:
    """One stderr handler whose lines carry the request id; quiet chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("faiss", "alembic", "PIL", "multipart", "python_multipart", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # pydicom's value warnings quote raw element values, which may be patient identifiers
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
