"""``medret serve``: run the service under uvicorn (one process; scale out with replicas)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from app.logs import configure_logging
from app.settings import Settings, load_settings
from commandline.errors import CommandError

log = logging.getLogger(__name__)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from MEDRET_* variables, with the command-line options that were given on top."""
    overrides: dict[str, Any] = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "data_dir": getattr(args, "data_dir", None),
        "database_url": getattr(args, "db", None),
        "collections": getattr(args, "collections", None),
        "log_level": getattr(args, "log_level", None),
    }
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise CommandError(describe_settings_error(exc)) from None


def describe_settings_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"MEDRET_{field.upper()}: {error['msg']}")
    return "bad configuration: " + "; ".join(problems)


def serve(settings: Settings, *, on_started: Callable[[str], None] | None = None) -> int:
    """Serve until interrupted. ``on_started(url)`` is called once the socket listens."""
    import uvicorn

    from app.connections import ConnectionLimits, protocol_with
    from app.main import create_app

    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_with(ConnectionLimits.from_settings(settings)),  # h11, timeouts, a bound
        log_config=None,  # our handlers (with the request id) stay in place
        access_log=False,  # app/logs.py logs each request without client addresses
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    if on_started is not None:
        url = f"http://{_display_host(settings.host)}:{settings.port}/"
        app.state.on_started = lambda: on_started(url)
    server.run()
    return 0 if server.started else 1


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)

    def announce(url: str) -> None:
        print(f"medret serve: the viewer is at {url} (API docs at {url}docs)", flush=True)

    return serve(settings, on_started=announce)
