"""The label space and the task: what a collection's labels are."""

from __future__ import annotations

import pytest

from labels import LabelSpace, LabelSpaceError, Task


def test_label_space_is_validated() -> None:
    with pytest.raises(LabelSpaceError, match="not unique"):
        LabelSpace.from_codes(["A", "A"])
    assert LabelSpace.from_codes(["Effusion"]).names == ("Effusion",)


def test_label_space_needs_one_name_per_code() -> None:
    with pytest.raises(LabelSpaceError, match=r"^2 class codes but 1 class names$"):
        LabelSpace(("MEL", "NV"), ("Melanoma",))
    assert issubclass(LabelSpaceError, ValueError)
    space = LabelSpace.from_codes(["MEL", "NV"], {"MEL": "Melanoma"})
    assert space.names == ("Melanoma", "NV")


def test_task_values_are_those_checkpoints_store() -> None:
    assert [task.value for task in Task] == ["single_label", "multi_label"]
    assert Task("multi_label") is Task.MULTI_LABEL
    assert f"{Task.SINGLE_LABEL}" == "single_label"


def test_a_task_is_written_one_way_for_people_and_reports() -> None:
    assert [task.phrase for task in Task] == ["single-label", "multi-label"]
