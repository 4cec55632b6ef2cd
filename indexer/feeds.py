"""Where a PACS follower learns of new instances: Orthanc's ``/changes`` feed, or QIDO-RS
polling of any other DICOMweb server (docs/indexer.md, "Following a PACS").

A feed reads from a cursor (opaque text the store keeps per collection and source,
:mod:`indexer.store.cursors`) and answers a :class:`Batch`: the instances it saw and the
cursor to store once they are indexed. Feeds only read; they never index or store.

* :class:`OrthancFeed`: the cursor is the last change sequence number read. Without a
  cursor (first start) the batch is the full QIDO listing with the feed's ``Last`` taken
  *before* listing, so an instance stored meanwhile is read again from the feed (and
  skipped then as already indexed) rather than missed.
* :class:`QidoFeed`: the cursor is the date (``YYYYMMDD``, UTC) of the last poll. A poll
  lists ``StudyDate=<cursor - 1 day>-``; every ``full_every``-th poll, and the first,
  lists everything, which is how an instance that arrives with an older study date is
  found (within ``full_every`` polls).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from dicomweb.client import DicomwebClient
from dicomweb.errors import DicomwebError, InstanceNotFoundError
from dicomweb.refs import InstanceRef, Source

log = logging.getLogger(__name__)

CHANGES_PAGE = 200
NEW_INSTANCE = "NewInstance"


@dataclass(frozen=True)
class Batch:
    """What one read of a feed gave: instances (maybe known already) and the next cursor.

    ``done``: the feed had nothing more when read (the follower waits before reading
    again); otherwise it stopped at the batch limit and more is waiting.
    """

    refs: tuple[InstanceRef, ...]
    cursor: str
    done: bool


class Feed(Protocol):
    name: str

    def read(self, cursor: str | None, limit: int) -> Batch:
        """The instances after ``cursor``, about ``limit`` at most (a full listing: all)."""
        ...


def feed_for(source: Source, client: DicomwebClient, *, full_every: int) -> Feed:
    """Orthanc's change feed when the server is an Orthanc, else QIDO-RS polling."""
    orthanc = client.orthanc_root()
    if orthanc is not None:
        return OrthancFeed(source, client, orthanc)
    return QidoFeed(source, client, full_every=full_every)


def full_listing(source: Source, client: DicomwebClient) -> list[InstanceRef]:
    """Every instance of ``source`` (its query keys applied)."""
    return [source.instance(*uids) for uids in client.iter_instances(source.query)]


class OrthancFeed:
    """New instances from Orthanc's ``GET /changes?since=N&limit=M`` (module doc)."""

    name = "orthanc-changes"

    def __init__(self, source: Source, client: DicomwebClient, orthanc_root: str) -> None:
        self.source = source
        self.client = client
        self.root = orthanc_root

    def read(self, cursor: str | None, limit: int) -> Batch:
        if cursor is None:
            last = self._changes({"last": ""})
            start = str(int(last.get("Last", 0)))
            return Batch(tuple(full_listing(self.source, self.client)), start, True)
        since = int(cursor)
        refs: list[InstanceRef] = []
        done = False
        while len(refs) < limit:
            page = self._changes({"since": str(since), "limit": str(CHANGES_PAGE)})
            for change in page.get("Changes", []):
                if change.get("ChangeType") == NEW_INSTANCE:
                    ref = self._instance(str(change.get("ID", "")))
                    if ref is not None:
                        refs.append(ref)
            since = max(since, int(page.get("Last", since)))
            if page.get("Done", True):
                done = True
                break
        return Batch(tuple(refs), str(since), done)

    def _changes(self, params: dict[str, str]) -> dict[str, Any]:
        answer = self.client.orthanc_json(f"{self.root}/changes", params)
        if not isinstance(answer, dict):
            raise DicomwebError(f"{self.root}/changes answered JSON that is not an object")
        return answer

    def _instance(self, orthanc_id: str) -> InstanceRef | None:
        """The reference of one Orthanc instance, or ``None`` if it is gone or the source's
        query keys exclude it."""
        try:
            tags = self.client.orthanc_json(f"{self.root}/instances/{orthanc_id}/simplified-tags")
        except InstanceNotFoundError:
            return None  # deleted since it was stored
        try:
            uids = tuple(
                str(tags[key])
                for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
            )
        except (KeyError, TypeError):
            log.warning("Orthanc instance %s has no UIDs; skipped", orthanc_id)
            return None
        if self.source.query and not self._matches(uids[2]):
            return None
        return self.source.instance(*uids)

    def _matches(self, sop: str) -> bool:
        """Whether the instance matches the source's query keys (one QIDO-RS search)."""
        query = (*self.source.query, ("SOPInstanceUID", sop))
        return bool(self.client.search_instances(query, limit=1))


class QidoFeed:
    """New instances by QIDO-RS polling on StudyDate (module doc)."""

    name = "qido-polling"

    def __init__(self, source: Source, client: DicomwebClient, *, full_every: int) -> None:
        self.source = source
        self.client = client
        self.full_every = max(1, full_every)
        self.polls = 0
        self.dates_in_query = any(key == "StudyDate" for key, _ in source.query)

    def read(self, cursor: str | None, limit: int) -> Batch:
        today = dt.datetime.now(dt.UTC).date()
        full = cursor is None or self.polls % self.full_every == 0 or self.dates_in_query
        self.polls += 1
        if full:
            refs = full_listing(self.source, self.client)
        else:
            since = _poll_date(cursor) - dt.timedelta(days=1)  # a day of overlap
            query = (*self.source.query, ("StudyDate", f"{since:%Y%m%d}-"))
            refs = [self.source.instance(*uids) for uids in self.client.iter_instances(query)]
        return Batch(tuple(refs), f"{today:%Y%m%d}", True)


def _poll_date(cursor: str | None) -> dt.date:
    try:
        return dt.datetime.strptime(cursor or "", "%Y%m%d").date()
    except ValueError:
        return dt.date(1900, 1, 1)  # an unreadable cursor: list everything
