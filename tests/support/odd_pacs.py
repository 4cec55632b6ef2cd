"""A DICOMweb server that is not Orthanc, for the client's and the indexer's tests: it lists
what it is given in pages capped at its own size, answers WADO-RS as told per instance,
and has no Orthanc ``/system`` route."""

from __future__ import annotations

import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

STUDY_UID, SERIES_UID = "1.2.3", "1.2.3.4"


@contextmanager
def listing_server(
    entries: list[str], *, cap: int, wado: dict[str, tuple[int, str, bytes]] | None = None
) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """A DICOMweb server that lists ``entries`` (JSON objects) at most ``cap`` a page,
    whatever limit is asked for, answers WADO-RS from ``wado`` (SOP UID → answer) and 404
    on ``/system`` (it is no Orthanc)."""
    requests: list[tuple[str, dict[str, str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append((self.path, dict(self.headers)))
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/dicom-web/instances":
                offset, limit = int(query.get("offset", 0)), int(query.get("limit", 100))
                page = entries[offset : offset + min(limit, cap)]
                answer = (200, "application/dicom+json", f"[{', '.join(page)}]".encode())
            elif wado and url.path.rsplit("/", 1)[-1] in wado:
                answer = wado[url.path.rsplit("/", 1)[-1]]
            else:
                answer = (404, "text/plain", b"not here")
            status, content_type, body = answer
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
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


def qido_entry(sop: str, study: str = STUDY_UID) -> str:
    return (
        f'{{"0020000D": {{"vr": "UI", "Value": ["{study}"]}}, '
        f'"0020000E": {{"vr": "UI", "Value": ["{SERIES_UID}"]}}, '
        f'"00080018": {{"vr": "UI", "Value": ["{sop}"]}}}}'
    )
