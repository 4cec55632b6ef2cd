"""What a collection's labels are: the task (one label or several per image) and the
label space (codes and display names)."""

from labels.space import LabelSpace, LabelSpaceError
from labels.task import Task

__all__ = ["LabelSpace", "LabelSpaceError", "Task"]
