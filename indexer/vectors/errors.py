"""The one error type of the vector index package."""

from __future__ import annotations


class VectorIndexError(RuntimeError):
    """A vector index cannot be built, searched, changed, saved or loaded as asked."""
