"""The label space: a collection's classes in logit order, as codes and readable names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class LabelSpaceError(ValueError):
    """A list of classes that cannot be a label space (says why)."""


@dataclass(frozen=True)
class LabelSpace:
    """The classes, in logit order: short codes (``MEL``) and readable names (``Melanoma``)."""

    codes: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.codes) != len(self.names):
            raise LabelSpaceError(
                f"{len(self.codes)} class codes but {len(self.names)} class names"
            )
        if len(set(self.codes)) != len(self.codes):
            raise LabelSpaceError(f"class codes are not unique: {list(self.codes)}")

    @classmethod
    def from_codes(cls, codes: Sequence[str], names: Mapping[str, str] | None = None) -> LabelSpace:
        """Codes in order; a name missing from ``names`` defaults to its code."""
        names = names or {}
        return cls(tuple(codes), tuple(names.get(code, code) for code in codes))
