"""A DICOMweb server that is not Orthanc, for the client's and the indexer's tests: it lists
what it is given in pages capped at its own size, answers WADO-RS as told per instance,
and has no Orthanc ``/system`` route."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STUDY_UID, SERIES_UID = "1.2.3", "1.2.3.4"


Answer = tuple[int, str, bytes]  # (status, content type, body)
Requests = list[tuple[str, dict[str, str]]]  # (path with query, headers) of each request


@contextmanager
def serving(
    answer: Callable[[str], Answer], *, delay_s: float = 0.0, headers: dict[str, str] | None = None
) -> Iterator[tuple[str, Requests]]:
    """A threaded HTTP server on a free loopback port answering every GET with
    ``answer(path)`` after ``delay_s`` (plus ``headers``); yields its DICOMweb root and the
    requests it received."""
    requests: Requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append((self.path, dict(self.headers)))
            time.sleep(delay_s)
            status, content_type, body = answer(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", requests
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def scripted_server(
    answers: list[Answer], *, delay_s: float = 0.0, headers: dict[str, str] | None = None
) -> Iterator[tuple[str, Requests]]:
    """A server giving ``answers`` in order, the last one again for every later request."""
    count = [0]

    def answer(path: str) -> Answer:
        count[0] += 1
        return answers[min(count[0], len(answers)) - 1]

    with serving(answer, delay_s=delay_s, headers=headers) as served:
        yield served


@contextmanager
def listing_server(
    entries: list[str], *, cap: int, wado: dict[str, Answer] | None = None
) -> Iterator[tuple[str, Requests]]:
    """A DICOMweb server that lists ``entries`` (JSON objects) at most ``cap`` a page,
    whatever limit is asked for, answers WADO-RS from ``wado`` (SOP UID → answer) and 404
    on ``/system`` (it is no Orthanc)."""

    def answer(path: str) -> Answer:
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/dicom-web/instances":
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
            page = entries[offset : offset + min(limit, cap)]
            return 200, "application/dicom+json", f"[{', '.join(page)}]".encode()
        sop = url.path.rsplit("/", 1)[-1]
        if wado and sop in wado:
            return wado[sop]
        return 404, "text/plain", b"not here"

    with serving(answer) as served:
        yield served


def qido_entry(sop: str, study: str = STUDY_UID) -> str:
    return (
        f'{{"0020000D": {{"vr": "UI", "Value": ["{study}"]}}, '
        f'"0020000E": {{"vr": "UI", "Value": ["{SERIES_UID}"]}}, '
        f'"00080018": {{"vr": "UI", "Value": ["{sop}"]}}}}'
    )
