"""What can go wrong talking to a PACS, by what the caller should do about it.

* :class:`SourceError`: the source URL or a setting is wrong; nothing was sent.
* :class:`InstanceNotFoundError`: the PACS answered 404 for one instance; skip it.
* :class:`PacsRefusedError`: the PACS answered a 4xx that retrying cannot fix (bad credentials,
  a query it does not understand); stop and say so.
* :class:`PacsUnavailableError`: no answer, a timeout, or 5xx after every retry; stop (an index
  job fails and keeps the previous version), or try again later.
* :class:`InstanceTooLargeError`: an instance over the decode limit on bytes; skip it.

None of them derives from ``OSError`` or ``ValueError``: code that skips unreadable files
(those two) never mistakes a PACS that is down for a bad file.
"""

from __future__ import annotations


class DicomwebError(Exception):
    """Any failure of :mod:`dicomweb`; the message names the server, never credentials."""


class SourceError(DicomwebError):
    """A source URL or client setting that cannot be used."""


class InstanceNotFoundError(DicomwebError):
    """The PACS does not hold the instance asked for (404)."""


class InstanceTooLargeError(DicomwebError):
    """The instance is larger than the caller allows."""


class PacsRefusedError(DicomwebError):
    """A 4xx answer other than 404: credentials, permissions or the request itself."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class PacsUnavailableError(DicomwebError):
    """No usable answer after the retries: refused connections, timeouts, 5xx."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
