"""commandline.types: argparse value types give a usage message, not a traceback."""

from __future__ import annotations

import argparse

import pytest

from commandline.types import non_negative_int, positive_int


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_int, "0", "must be at least 1, got 0"),
        (positive_int, "x", "'x' is not an integer"),
        (non_negative_int, "-1", "cannot be negative, got -1"),
    ],
)
def test_bad_values_are_argparse_errors(parse, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse(text)


def test_good_values_parse() -> None:
    assert positive_int("3") == 3
    assert non_negative_int("0") == 0
