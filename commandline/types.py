"""argparse value types shared by every ``medret`` subcommand.

argparse turns an ``ArgumentTypeError`` into a usage message and exit 2.
"""

from __future__ import annotations

import argparse


def _integer_at_least(text: str, minimum: int, message: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{message}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    return _integer_at_least(text, 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    """An integer ≥ 0."""
    return _integer_at_least(text, 0, "cannot be negative")
