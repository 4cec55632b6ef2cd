"""The metadata store's one error type."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A metadata-store operation that cannot be done; the message says why and what to do."""
