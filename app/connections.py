"""Connection limits of ``medret serve``: header and body read timeouts, and a bound on open
connections, enforced in uvicorn's h11 protocol (``uvicorn.Config(http=...)``).

uvicorn closes an idle keep-alive connection, but nothing else: a client that sends half a
request line, or a body at 1 byte per second, holds its connection (and a request task)
for ever, and ``limit_concurrency`` only answers 503 once a request's headers have arrived,
so it never refuses a connection that stalls before them. Here, per connection:

- the request line and headers must be complete within ``header_timeout_s`` of the
  connection opening (or of the previous answer on a keep-alive connection);
- the body gets ``body_timeout_s``, extended by one second for every
  ``body_min_bytes_per_s`` bytes received (Apache mod_reqtimeout's ``body=20,MinRate=500``
  rule), so a steady upload over a slow link finishes and a trickle is cut; the clock stops
  while the server itself is not reading (the app has not taken the bytes yet);
- a connection over ``max_connections`` open ones is answered 503 and closed at once.

A stalled client is answered 408 (with ``Connection: close``) and disconnected, unless an
answer has already started, in which case it is only disconnected.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from app.logs import REQUEST_ID_HEADER, new_request_id
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    body_min_bytes_per_s: int  # 0: the whole body within body_timeout_s
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            body_min_bytes_per_s=settings.body_min_bytes_per_s,
            max_connections=settings.max_connections,
        )


class ClosedConnections:
    """Connections refused or cut, counted by reason and logged at most once per
    :attr:`interval_s` (a flood of stalled clients must not flood the log as well)."""

    interval_s = 10.0

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._logged_at = -math.inf
        self._pending: asyncio.TimerHandle | None = None

    def note(self, reason: str, loop: asyncio.AbstractEventLoop) -> None:
        self._counts[reason] += 1
        if self._pending is None:
            delay = max(0.0, self._logged_at + self.interval_s - loop.time())
            self._pending = loop.call_later(delay, self._log, loop)

    def _log(self, loop: asyncio.AbstractEventLoop) -> None:
        counts = "; ".join(f"{reason} ×{n}" for reason, n in self._counts.items())
        log.warning("connections closed: %s", counts)
        self._counts.clear()
        self._pending = None
        self._logged_at = loop.time()


class _Phase(enum.Enum):
    HEADERS = "waiting for the request line and headers"
    BODY = "reading the request body"
    OTHER = "answering, or closing"


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with :class:`ConnectionLimits` (see the module docstring).

    Made for given limits by :func:`protocol_with`; uvicorn builds one per connection."""

    limits: ClassVar[ConnectionLimits]
    tally: ClassVar[ClosedConnections]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase = _Phase.OTHER
        self._timer: asyncio.TimerHandle | None = None
        self._received = 0  # bytes read on this connection
        self._body_clock: tuple[float, int] = (0.0, 0)  # (started at, bytes read then)
        self._refused = False

    # ------------------------------------------------------------------ uvicorn's hooks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refused = True
            self.tally.note(
                f"refused: {self.limits.max_connections} open (MEDRET_MAX_CONNECTIONS)", self.loop
            )
            self._answer_and_close(
                503,
                "the server has too many open connections; retry in a moment",
                retry_after=True,
            )
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._phase = _Phase.OTHER
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._received += len(data)
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()  # a keep-alive connection waits for the next request's headers

    # ------------------------------------------------------------------ the timers

    def _current_phase(self) -> _Phase:
        if self.transport.is_closing():
            return _Phase.OTHER
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            return _Phase.HEADERS
        if self.conn.their_state is h11.SEND_BODY:
            return _Phase.BODY
        return _Phase.OTHER

    def _watch(self) -> None:
        """(Re)arm the timer when the connection enters a new phase; a phase keeps the
        deadline it started with."""
        phase = self._current_phase()
        if phase is self._phase:
            return
        self._cancel_timer()
        self._phase = phase
        if phase is _Phase.HEADERS:
            self._timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_late)
        elif phase is _Phase.BODY:
            self._start_body_clock()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        if self._current_phase() is _Phase.HEADERS:
            self.tally.note(
                f"no complete headers within {self.limits.header_timeout_s:g} s", self.loop
            )
            self._answer_and_close(
                408,
                f"the request headers did not arrive within {self.limits.header_timeout_s:g} s",
            )

    def _start_body_clock(self) -> None:
        self._body_clock = (self.loop.time(), self._received)
        self._timer = self.loop.call_later(self.limits.body_timeout_s, self._check_body)

    def _body_deadline(self) -> float:
        started, received_then = self._body_clock
        allowance = self.limits.body_timeout_s
        if self.limits.body_min_bytes_per_s:
            allowance += (self._received - received_then) / self.limits.body_min_bytes_per_s
        return started + allowance

    def _check_body(self) -> None:
        self._timer = None
        if self._current_phase() is not _Phase.BODY:
            return
        if self.flow.read_paused:  # the app has not taken what came: not the client's fault
            self._start_body_clock()
            return
        remaining = self._body_deadline() - self.loop.time()
        if remaining > 0:
            self._timer = self.loop.call_later(remaining, self._check_body)
            return
        rate = self.limits.body_min_bytes_per_s
        self.tally.note(
            f"body slower than {rate} bytes/s after {self.limits.body_timeout_s:g} s", self.loop
        )
        self._answer_and_close(
            408,
            f"the request body came too slowly (less than {rate} bytes per second after "
            f"{self.limits.body_timeout_s:g} s)"
            if rate
            else f"the request body did not arrive within {self.limits.body_timeout_s:g} s",
        )

    # ------------------------------------------------------------------ answering

    def _answer_and_close(self, status: int, detail: str, *, retry_after: bool = False) -> None:
        """A JSON error answer (the shape of :func:`app.errors.error_body`) if no answer has
        started on this connection, then close it; the request, if any, sees a disconnect."""
        request_id = new_request_id(None)
        body = json.dumps({"detail": detail, "request_id": request_id}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
        ]
        if retry_after:
            headers.append((b"retry-after", b"1"))
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):  # no answer started yet
            try:
                response = h11.Response(
                    status_code=status, headers=headers, reason=STATUS_PHRASES[status]
                )
                self.transport.write(
                    self.conn.send(response)
                    + (self.conn.send(h11.Data(data=body)) or b"")
                    + (self.conn.send(h11.EndOfMessage()) or b"")
                )
            except h11.LocalProtocolError:
                pass  # no answer is possible in this state: just close
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._cancel_timer()
        self._phase = _Phase.OTHER
        self.transport.close()


def protocol_with(limits: ConnectionLimits) -> type[LimitedH11Protocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)`` for these limits."""
    return type(
        "LimitedH11Protocol",
        (LimitedH11Protocol,),
        {"limits": limits, "tally": ClosedConnections()},
    )
