"""A live ``medret serve`` (a real uvicorn process on a loopback port) and its log.

:func:`launch_server` starts one with exactly the ``MEDRET_*`` variables given (those of
the test process are not passed on) and returns once a path answers 200;
:func:`start_server` serves a :class:`~support.service.ServiceEnv` with the admin API on,
:func:`start_bare_server` a data folder (possibly empty) without it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from support.group_salt import SALT_ENVIRONMENT
from support.service import ADMIN_TOKEN, ServiceEnv

READY_WITHIN_S = 60
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<logger>[\w.]+) \[(?P<request_id>[^\]\s]+)\] "
)
ANNOUNCE = "medret serve: "  # the command's own start-up lines, outside the log format


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *_: object) -> None:
        stop_server(self)  # also when the test body fails


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(env: ServiceEnv, log_path: Path, **extra_env: str) -> LiveServer:
    """``medret serve`` of ``env`` with the admin API on (and the test salt), once /readyz
    answers 200."""
    variables = {
        "MEDRET_DATA_DIR": str(env.data_dir),
        "MEDRET_DATABASE_URL": env.database_url,
        "MEDRET_ADMIN_TOKEN": ADMIN_TOKEN,
        "MEDRET_ARCHIVE_ROOTS": str(env.archive_root),
        "MEDRET_RELOAD_INTERVAL_S": "0.3",
        "MEDRET_INDEX_WORKERS": "0",
        **SALT_ENVIRONMENT,
        **extra_env,
    }
    return launch_server(variables, log_path, ready_path="/readyz")


def start_bare_server(data_dir: Path, log_path: Path, **extra_env: str) -> LiveServer:
    """``medret serve`` over `data_dir` (possibly empty) without an admin token, once
    /healthz answers."""
    variables = {
        "MEDRET_DATA_DIR": str(data_dir),
        "MEDRET_DATABASE_URL": f"sqlite:///{data_dir / 'medret.db'}",
        "MEDRET_RELOAD_INTERVAL_S": "0.3",
        **extra_env,
    }
    return launch_server(variables, log_path, ready_path="/healthz")


def launch_server(variables: dict[str, str], log_path: Path, *, ready_path: str) -> LiveServer:
    """``medret serve`` with these MEDRET_* variables (on a free port), once ``ready_path``
    answers 200; MEDRET_* variables of the test process itself are not passed on."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    with log_path.open("w") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "medret", "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**inherited, **variables, "MEDRET_PORT": str(port)},
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"medret serve exited with {process.returncode}: {log_path.read_text()}"
            )
        try:
            if httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                return LiveServer(url, process, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(
        f"medret serve was not ready within {READY_WITHIN_S} s: {log_path.read_text()}"
    )


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def log_problems(text: str) -> list[str]:
    """Lines of a server log that are tracebacks, errors, or not in the house format."""
    bad = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(ANNOUNCE):
            continue
        match = LOG_LINE.match(line)
        if (
            match is None
            or "Traceback" in line
            or match.group(1) in ("ERROR", "CRITICAL")
            or (match.group("logger") == "app.access" and match.group("request_id") == "-")
        ):
            bad.append(line)
    return bad


def vm_rss_bytes(pid: int) -> int:
    """The resident memory of process ``pid`` (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")
