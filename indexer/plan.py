"""The reindex plan: what a build will do to a collection, decided without FAISS or SQL.

:func:`plan_reindex` takes plain inputs — the newly embedded samples, the content hashes the
collection already holds, the files that failed to read — and says which cases are new,
which keep their id, which keep their old vector because their file could not be read
this time, which are removed, and which conflict. :meth:`ReindexPlan.with_new_ids` gives
the new cases the ids the store reserved for them. The builder then applies the plan.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

CONFLICT_REASON = "already indexed with other content; remove it first"


class ReindexMode(enum.StrEnum):
    """How a build treats the archive (the values are the job kinds of the store).

    ``FULL``: the collection becomes exactly the archive: every image is embedded with the
    given checkpoint; cases whose content is already known keep their id (and get the
    archive's current labels and metadata), new ones get new ids, and cases no longer in
    the archive are deleted. A new checkpoint is adopted here, and only here.

    ``ADD``: only images whose content hash is new are embedded and appended to a copy of
    the active version; the same image twice is one case. The checkpoint must be the one
    the active version was built with.
    """

    FULL = "full"
    ADD = "add"


def parse_reindex_mode(value: str) -> ReindexMode:
    """``value`` as a :class:`ReindexMode`; a :class:`ValueError` names the valid modes."""
    try:
        return ReindexMode(value)
    except ValueError:
        raise ValueError(f"mode is 'full' or 'add', not {value!r}") from None


@dataclass(frozen=True)
class EmbeddedCase:
    """A sample that was embedded in this build."""

    position: int  # its row among the embedded vectors
    sample: int  # its index among the archive's samples
    key: str  # the sample's key: the case's external id
    content_hash: str


@dataclass(frozen=True)
class PlannedCase:
    """An embedded sample and the case id it will have."""

    case_id: int
    embedded: EmbeddedCase


@dataclass(frozen=True)
class ReindexPlan:
    """What a build does; vectors of the new version come in the order of :attr:`vectors`
    (after the active version's when :attr:`extends_active`, then :attr:`carried`)."""

    mode: ReindexMode
    new: tuple[EmbeddedCase, ...]  # content not indexed yet: gets a new case id
    kept: tuple[PlannedCase, ...]  # FULL: known content, keeps its id (its row is refreshed)
    carried: tuple[int, ...]  # FULL: cases whose file failed to read: old vector and row kept
    removed: tuple[int, ...]  # FULL: cases whose content is no longer in the archive
    conflicts: tuple[tuple[str, str], ...]  # ADD: (key, reason) not indexed
    extends_active: bool  # ADD onto an active version: its vectors come first
    new_ids: tuple[int, ...] = ()  # the ids of :attr:`new`, once reserved

    def with_new_ids(self, ids: Sequence[int]) -> ReindexPlan:
        """The plan with the ids reserved for the new cases (one each, in order)."""
        if len(ids) != len(self.new):
            raise ValueError(f"{len(self.new)} new cases need as many ids, got {len(ids)}")
        return replace(self, new_ids=tuple(int(i) for i in ids))

    @property
    def added(self) -> tuple[PlannedCase, ...]:
        """The new cases with their ids (:meth:`with_new_ids` first)."""
        if len(self.new_ids) != len(self.new):
            raise ValueError("the new cases have no ids yet; call with_new_ids first")
        return tuple(PlannedCase(i, c) for i, c in zip(self.new_ids, self.new, strict=True))

    @property
    def vectors(self) -> tuple[PlannedCase, ...]:
        """The embedded vectors the new version holds, in order: new cases, then kept ones."""
        return self.added + self.kept


def plan_reindex(
    mode: ReindexMode,
    embedded: Sequence[EmbeddedCase],
    known: Mapping[str, int],
    *,
    duplicate_hashes: Collection[str] = (),
    unread_case_ids: Collection[int] = (),
    external_ids_in_use: Collection[str] = (),
    has_active: bool = False,
) -> ReindexPlan:
    """Which cases a build adds, keeps, carries over and removes.

    ``known`` maps the collection's content hashes to case ids; ``duplicate_hashes`` are the
    hashes of samples skipped as a second copy of content embedded in this build;
    ``unread_case_ids`` the cases whose external id is a file that failed to read;
    ``external_ids_in_use`` the collection's external ids (ADD: a new content under a used
    key is a conflict, not indexed); ``has_active``: the collection has an active version.

    FULL: content not in ``known`` is new, known content keeps its id, and a known case
    whose content is gone is removed — unless its file merely failed to read this time,
    then it is carried over with its old vector. ADD: content not in ``known`` is new.
    """
    fresh = [case for case in embedded if case.content_hash not in known]
    conflicts: list[tuple[str, str]] = []
    if mode is ReindexMode.ADD:  # an external id already used by other content is a conflict
        in_use = set(external_ids_in_use)
        conflicts = [(case.key, CONFLICT_REASON) for case in fresh if case.key in in_use]
        fresh = [case for case in fresh if case.key not in in_use]
        return ReindexPlan(
            mode, tuple(fresh), (), (), (), tuple(conflicts), extends_active=has_active
        )
    kept = [PlannedCase(known[c.content_hash], c) for c in embedded if c.content_hash in known]
    present = {case.content_hash for case in embedded} | set(duplicate_hashes)
    gone = {case_id for content_hash, case_id in known.items() if content_hash not in present}
    carried = gone & set(unread_case_ids)
    return ReindexPlan(
        mode,
        new=tuple(fresh),
        kept=tuple(kept),
        carried=tuple(sorted(carried)),
        removed=tuple(sorted(gone - carried)),
        conflicts=(),
        extends_active=False,
    )
