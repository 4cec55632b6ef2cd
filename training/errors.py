"""The one error of a training run that cannot start or continue."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot start or continue (bad data, a mismatched resume)."""
