"""How to reach a DICOMweb server, read from the environment (never from a command line).

=============================== ==========================================================
variable                        meaning
=============================== ==========================================================
``MEDRET_DICOMWEB_USERNAME``    HTTP basic user (with ``MEDRET_DICOMWEB_PASSWORD``)
``MEDRET_DICOMWEB_PASSWORD``    HTTP basic password
``MEDRET_DICOMWEB_TOKEN``       a bearer token instead of basic credentials
``MEDRET_DICOMWEB_CA_BUNDLE``   a PEM file of certificate authorities to trust (TLS is
                                always verified; this only adds whom to trust)
``MEDRET_DICOMWEB_TIMEOUT_S``   seconds to connect and to wait for each read (default 30)
``MEDRET_DICOMWEB_RETRIES``     retries of a request that failed to connect, timed out or
                                got a 5xx, with back-off 0.5 s, 1 s, 2 s … (default 3)
``MEDRET_DICOMWEB_URL``         when set, the credentials are sent to this PACS only (its
                                root or below), never to another server a stored case or
                                a source names
=============================== ==========================================================

A request waits at most ``MEDRET_DICOMWEB_TIMEOUT_S`` to connect and for each read, and is
tried ``MEDRET_DICOMWEB_RETRIES + 1`` times: a PACS that does not answer at all is given
up after about (retries + 1) × timeout plus the back-off (about 2 minutes by default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dicomweb.errors import SourceError

ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    "MEDRET_DICOMWEB_USERNAME",
    "MEDRET_DICOMWEB_PASSWORD",
    "MEDRET_DICOMWEB_TOKEN",
    "MEDRET_DICOMWEB_CA_BUNDLE",
    "MEDRET_DICOMWEB_TIMEOUT_S",
    "MEDRET_DICOMWEB_RETRIES",
)


@dataclass(frozen=True)
class ClientSettings:
    """Credentials, trust, timeout and retries of a :class:`dicomweb.client.DicomwebClient`."""

    username: str | None = None
    password: str | None = None
    token: str | None = None
    ca_bundle: Path | None = None
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5
    credentials_root: str | None = None  # send credentials only to this root or below

    def credentials_for(self, root: str) -> bool:
        """Whether requests to ``root`` carry the credentials."""
        scope = self.credentials_root
        if scope is None:
            return True
        root = root.rstrip("/")
        return root == scope or root.startswith(f"{scope}/")

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise SourceError(
                "set both MEDRET_DICOMWEB_USERNAME and MEDRET_DICOMWEB_PASSWORD, or neither"
            )
        if self.token is not None and self.username is not None:
            raise SourceError("set MEDRET_DICOMWEB_TOKEN or a username and password, not both")
        if not self.timeout_s > 0 or self.retries < 0 or self.backoff_s < 0:
            raise SourceError("the DICOMweb timeout must be positive and retries ≥ 0")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise SourceError(f"MEDRET_DICOMWEB_CA_BUNDLE {self.ca_bundle} is not a file")

    def __repr__(self) -> str:  # never shows the secrets
        auth = "bearer" if self.token else "basic" if self.username else "none"
        return f"ClientSettings(auth={auth}, timeout_s={self.timeout_s}, retries={self.retries})"

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ClientSettings:
        env = os.environ if env is None else env
        ca_bundle = env.get("MEDRET_DICOMWEB_CA_BUNDLE") or None
        return cls(
            username=env.get("MEDRET_DICOMWEB_USERNAME") or None,
            password=env.get("MEDRET_DICOMWEB_PASSWORD") or None,
            token=env.get("MEDRET_DICOMWEB_TOKEN") or None,
            ca_bundle=Path(ca_bundle) if ca_bundle else None,
            timeout_s=_number(env, "MEDRET_DICOMWEB_TIMEOUT_S", 30.0),
            retries=int(_number(env, "MEDRET_DICOMWEB_RETRIES", 3)),
            credentials_root=_root(env.get("MEDRET_DICOMWEB_URL")),
        )


def _root(url: str | None) -> str | None:
    if not url:
        return None
    return url.removeprefix("dicomweb+").split("?")[0].rstrip("/")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SourceError(f"{name}={raw!r} is not a number") from None
