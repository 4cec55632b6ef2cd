"""Metadata filters of POST /query (issue #12): a key the store cannot look up, an over-long
value or too many filters is a 400 with a sentence, decided before the upload is decoded;
keys and values within the documented bounds are searched as usual."""

from __future__ import annotations

import httpx
import pytest

from support.http import assert_json_answer

MAX_FILTER_VALUE = 256  # the documented bounds (docs/service.md)
MAX_FILTERS = 20

NOT_AN_IMAGE = b"these bytes are no image: decoding them would be a 415"


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        pytest.param("a b;c:d", "is not a metadata key", id="key with a space"),
        pytest.param("age.years:40", "is not a metadata key", id="key with a dot"),
        pytest.param("sex\u202e:male", "is not a metadata key", id="key with a control mark"),
        pytest.param("k" * 65 + ":v", "1–64 letters", id="key of 65 characters"),
        pytest.param(
            "modality:" + "x" * (MAX_FILTER_VALUE + 1),
            f"at most {MAX_FILTER_VALUE}",
            id="value one character too long",
        ),
        pytest.param("modality:" + "x" * 10_000, "10000 characters", id="value of 10 kB"),
    ],
)
def test_a_bad_filter_is_400_before_the_upload_is_decoded(
    api: httpx.Client, item: str, fragment: str
) -> None:
    response = api.post("/query", params={"filter": item}, files={"file": ("q", NOT_AN_IMAGE)})
    body = assert_json_answer(response, {400})
    assert "filter" in body["detail"]
    assert fragment in body["detail"]
    assert len(body["detail"]) < 300  # the sentence quotes at most the start of the item


def test_too_many_filters_is_400(api: httpx.Client) -> None:
    items = [f"k{i}:v" for i in range(MAX_FILTERS + 1)]
    response = api.post("/query", params={"filter": items}, files={"file": ("q", NOT_AN_IMAGE)})
    body = assert_json_answer(response, {400})
    assert "filter" in body["detail"]


def test_filters_at_the_bounds_are_searched(api: httpx.Client, ham_image: bytes) -> None:
    items = [f"{'k' * 64}:v", "modality:" + "x" * MAX_FILTER_VALUE] + [
        f"key_{i}-x:{i}" for i in range(MAX_FILTERS - 2)
    ]
    response = api.post("/query", params={"filter": items}, files={"file": ("q.jpg", ham_image)})
    body = assert_json_answer(response, {200})
    assert body["cases"] == []  # no case has these keys: nothing matches, nothing fails
