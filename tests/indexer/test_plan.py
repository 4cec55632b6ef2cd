"""The reindex plan on plain inputs: which cases are new, kept, carried, removed or conflict."""

from __future__ import annotations

import pytest

from indexer.plan import (
    CONFLICT_REASON,
    EmbeddedCase,
    PlannedCase,
    ReindexMode,
    parse_reindex_mode,
    plan_reindex,
)


def embedded(*pairs: tuple[str, str]) -> list[EmbeddedCase]:
    """(key, content hash) pairs as embedded cases, sample index = 10 × position."""
    return [EmbeddedCase(pos, 10 * pos, key, h) for pos, (key, h) in enumerate(pairs)]


def test_modes_are_parsed_once_with_one_message() -> None:
    assert parse_reindex_mode("full") is ReindexMode.FULL
    assert parse_reindex_mode("add") is ReindexMode.ADD
    assert ReindexMode.ADD == "add"  # the job kind the store records
    with pytest.raises(ValueError, match="mode is 'full' or 'add', not 'remove'"):
        parse_reindex_mode("remove")


def test_full_reindex_keeps_known_content_and_removes_what_is_gone() -> None:
    cases = embedded(("a.png", "h1"), ("new.png", "h9"), ("b.png", "h2"))
    known = {"h1": 101, "h2": 102, "h3": 103}  # h3: no longer in the archive
    plan = plan_reindex(ReindexMode.FULL, cases, known, has_active=True)
    assert plan.new == (cases[1],)
    assert plan.kept == (PlannedCase(101, cases[0]), PlannedCase(102, cases[2]))
    assert plan.removed == (103,)
    assert plan.carried == ()
    assert plan.conflicts == ()
    assert not plan.extends_active  # a full reindex never appends to the active version

    plan = plan.with_new_ids([500])
    assert plan.added == (PlannedCase(500, cases[1]),)
    # the version's embedded vectors: new cases first, then the kept ones
    assert [(c.case_id, c.embedded.position) for c in plan.vectors] == [
        (500, 1),
        (101, 0),
        (102, 2),
    ]


def test_full_reindex_follows_content_across_renames_and_swaps() -> None:
    cases = embedded(("img_000.png", "h2"), ("img_001.png", "h1"), ("img_002.png", "h-new"))
    known = {"h1": 1, "h2": 2, "h3": 3}  # img_002.png had h3; its content changed
    plan = plan_reindex(ReindexMode.FULL, cases, known).with_new_ids([4])
    assert {c.embedded.key: c.case_id for c in plan.kept} == {"img_000.png": 2, "img_001.png": 1}
    assert [(c.case_id, c.embedded.key) for c in plan.added] == [(4, "img_002.png")]
    assert plan.removed == (3,)


def test_full_reindex_keeps_duplicates_and_carries_unread_files() -> None:
    cases = embedded(("a.png", "h1"))
    known = {"h1": 1, "h2": 2, "h3": 3, "h4": 4}
    plan = plan_reindex(
        ReindexMode.FULL,
        cases,
        known,
        duplicate_hashes=["h2"],  # a second copy of h2 was skipped this time: still present
        unread_case_ids=[3, 1],  # 3's file failed to read; 1 was read under another key
    )
    assert plan.carried == (3,)  # keeps its case and its old vector
    assert plan.removed == (4,)
    assert plan.new == ()
    assert plan.with_new_ids([]).vectors == (PlannedCase(1, cases[0]),)


def test_add_takes_only_new_content_and_refuses_used_keys() -> None:
    cases = embedded(("new.png", "h5"), ("taken.png", "h6"), ("old.png", "h1"))
    plan = plan_reindex(
        ReindexMode.ADD,
        cases,
        {"h1": 1, "h2": 2},
        unread_case_ids=[2],  # ignored: an add never removes or carries cases
        external_ids_in_use={"taken.png", "old.png"},
        has_active=True,
    )
    assert plan.new == (cases[0],)
    assert plan.conflicts == (("taken.png", CONFLICT_REASON),)
    assert plan.kept == plan.removed == plan.carried == ()
    assert plan.extends_active
    assert [c.case_id for c in plan.with_new_ids([77]).vectors] == [77]


def test_add_to_a_collection_without_a_version() -> None:
    plan = plan_reindex(ReindexMode.ADD, embedded(("a.png", "h1")), {}, has_active=False)
    assert not plan.extends_active
    assert len(plan.new) == 1


def test_new_cases_need_exactly_their_ids() -> None:
    plan = plan_reindex(ReindexMode.FULL, embedded(("a", "h1"), ("b", "h2")), {})
    with pytest.raises(ValueError, match="no ids yet"):
        _ = plan.vectors
    with pytest.raises(ValueError, match="2 new cases need as many ids, got 1"):
        plan.with_new_ids([9])
    assert [c.case_id for c in plan.with_new_ids([9, 8]).added] == [9, 8]


def test_an_empty_archive_removes_everything() -> None:
    plan = plan_reindex(ReindexMode.FULL, [], {"h1": 1, "h2": 2}).with_new_ids([])
    assert plan.removed == (1, 2)
    assert plan.vectors == ()
