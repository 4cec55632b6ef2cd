"""A real Orthanc PACS with its DICOMweb plugin, started by tests on a free loopback port.

:class:`Orthanc` writes a configuration into a folder (storage, index and log live there
too), starts ``Orthanc`` on it and returns once ``GET /system`` answers. It stores
instances with a real STOW-RS request (:meth:`Orthanc.stow`) or through Orthanc's own REST
(:meth:`Orthanc.store_rest`, for files STOW would refuse), and can be stopped (about 2.4 s) and
started again on the same folder and port (the data persist), killed (instantly: what
leaving the ``with`` block does), or paused (SIGSTOP: a server
that stops answering). :func:`require_orthanc` skips a test when Debian's ``orthanc`` and
``orthanc-dicomweb`` are absent (``scripts/ensure_orthanc.sh`` installs them), except when
``CI`` is set: then it fails, so CI can never pass while silently skipping the PACS tests.
``MEDRET_TEST_ORTHANC`` and ``MEDRET_TEST_ORTHANC_DICOMWEB`` point at other builds.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

ORTHANC = os.environ.get("MEDRET_TEST_ORTHANC", "Orthanc")
DICOMWEB_PLUGIN = Path(
    os.environ.get(
        "MEDRET_TEST_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    )
)
READY_WITHIN_S = 20.0
STOW_BATCH = 50
LOG_TAIL_CHARS = 3000


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def orthanc_binary() -> str | None:
    """The Orthanc executable (also looked for in /usr/sbin, where Debian puts it)."""
    return shutil.which(ORTHANC) or shutil.which(ORTHANC, path="/usr/sbin:/usr/local/sbin")


def orthanc_available() -> str | None:
    """Why a real Orthanc cannot be started here, or None when it can."""
    if orthanc_binary() is None:
        return f"no {ORTHANC} executable (scripts/ensure_orthanc.sh installs it)"
    if not DICOMWEB_PLUGIN.is_file():
        return f"no DICOMweb plugin at {DICOMWEB_PLUGIN} (apt-get install orthanc-dicomweb)"
    return None


def require_orthanc() -> None:
    """Skip the calling test without Orthanc, or fail it when ``CI`` is set."""
    reason = orthanc_available()
    if reason is not None:
        _unavailable(reason)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so the PACS tests must run, but {reason}", pytrace=False)
    pytest.skip(reason)


class Orthanc:
    """One Orthanc process serving `folder` on 127.0.0.1 (HTTP only; no DICOM listener).

    With `credentials` (user, password) HTTP basic authentication is required and
    :attr:`auth` holds them; the helpers here always authenticate.
    """

    def __init__(self, folder: Path, credentials: tuple[str, str] | None = None) -> None:
        binary = orthanc_binary()
        if binary is None or not DICOMWEB_PLUGIN.is_file():
            raise RuntimeError(orthanc_available())
        self.folder = folder
        self.auth = credentials
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.source = f"dicomweb+{self.dicomweb_url}"
        self.log_dir = folder / "log"
        self.config_path = folder / "orthanc.json"
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        self.started_in_s = 0.0
        folder.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(self._config(), indent=2))

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": "medret-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "DicomServerEnabled": False,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "AuthenticationEnabled": self.auth is not None,
            "RegisteredUsers": {},
        }
        if self.auth is not None:
            config["RegisteredUsers"] = {self.auth[0]: self.auth[1]}
        return config

    # ----------------------------------------------------------------------- lifecycle

    def __enter__(self) -> Orthanc:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        # also when the test body fails; SIGKILL, since a graceful stop takes Orthanc 1.10
        # about 2.4 s (its HTTP server's shutdown) and the folder is thrown away anyway
        self.kill()

    def start(self) -> None:
        """Start Orthanc (again: same folder, port and data) and wait until it answers."""
        if self._process is not None and self._process.poll() is None:
            raise RuntimeError("Orthanc is already running")
        started = time.monotonic()
        with (self.folder / "stdout.log").open("ab") as output:
            self._process = subprocess.Popen(
                [self._binary, f"--logdir={self.log_dir}", str(self.config_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._paused = False
        self._wait_ready(started)
        self.started_in_s = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        while time.monotonic() - started < READY_WITHIN_S:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/system", auth=self.auth, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"Orthanc did not answer within {READY_WITHIN_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate Orthanc (resuming it first if paused) and wait for it to exit."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        self.resume()
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: Orthanc dies without shutting down (also when paused)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the port stays open but nothing answers."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._paused and self._process is not None:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def log_tail(self) -> str:
        """The end of Orthanc's logs (its log files, then its own output)."""
        texts = [p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log*"))]
        stdout = self.folder / "stdout.log"
        if stdout.is_file():
            texts.append(stdout.read_text(errors="replace"))
        return "\n".join(texts)[-LOG_TAIL_CHARS:]

    # ----------------------------------------------------------------------- data

    def client(self, **options: Any) -> httpx.Client:
        """An HTTP client on :attr:`url`, authenticated when credentials were given."""
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=30, **options)

    def stow(self, instances: Iterable[bytes]) -> None:
        """Store Part 10 `instances` with STOW-RS (``POST /dicom-web/studies``), in batches."""
        iterator = iter(instances)
        with self.client() as client:
            while batch := list(islice(iterator, STOW_BATCH)):
                boundary = secrets.token_hex(16)
                response = client.post(
                    "/dicom-web/studies",
                    content=multipart_body(batch, boundary),
                    headers={
                        "Content-Type": f'multipart/related; type="application/dicom"; '
                        f"boundary={boundary}",
                        "Accept": "application/dicom+json",
                    },
                )
                if response.status_code != 200 or _stow_failures(response):
                    raise RuntimeError(f"STOW-RS failed ({response.status_code}): {response.text}")

    def store_rest(self, data: bytes) -> dict[str, Any]:
        """Store one file with Orthanc's REST (``POST /instances``); its JSON answer."""
        with self.client() as client:
            response = client.post(
                "/instances", content=data, headers={"Content-Type": "application/dicom"}
            )
        if response.status_code != 200:
            raise RuntimeError(f"POST /instances failed ({response.status_code}): {response.text}")
        answer: dict[str, Any] = response.json()
        return answer

    def count_instances(self) -> int:
        """How many instances Orthanc holds (``GET /statistics``)."""
        with self.client() as client:
            response = client.get("/statistics")
        response.raise_for_status()
        return int(response.json()["CountInstances"])


def multipart_body(parts: Iterable[bytes], boundary: str) -> bytes:
    """A multipart/related body of application/dicom `parts` (RFC 2046 framing)."""
    chunks: list[bytes] = []
    for part in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), part]
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def _stow_failures(response: httpx.Response) -> list[Any]:
    """The FailedSOPSequence (0008,1198) items of a STOW-RS answer."""
    try:
        answer = response.json()
    except ValueError:
        return []
    failed = answer.get("00081198", {}) if isinstance(answer, dict) else {}
    values: list[Any] = failed.get("Value", [])
    return values
