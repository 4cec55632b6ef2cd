"""Bad query parameters, malformed request bodies, wrong methods and bad case ids are
4xx answers with a detail sentence, never a 5xx (issue #5), in process and over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from support.http import assert_json_answer, multipart

MiB = 2**20


BAD_QUERY_PARAMS: list[tuple[str, dict[str, Any], set[int], str]] = [
    ("top_k zero", {"top_k": 0}, {400}, "top_k"),
    ("top_k 101", {"top_k": 101}, {400}, "top_k"),
    ("top_k text", {"top_k": "abc"}, {400}, "top_k"),
    ("top_k negative", {"top_k": -5}, {400}, "top_k"),
    ("top_k huge", {"top_k": "9" * 40}, {400}, "top_k"),
    ("top_k float", {"top_k": "2.5"}, {400}, "top_k"),
    ("unknown collection", {"collection": "nope"}, {404}, "nope"),
    ("collection path", {"collection": "../../etc/passwd"}, {404}, "collection"),
    ("collection weird", {"collection": "d\u00e9rm'; DROP TABLE x;--\u202e"}, {404}, "collection"),
    ("collection too long", {"collection": "x" * 65}, {400}, "collection"),
    ("collection empty", {"collection": ""}, {400, 404}, ""),
    ("filter without colon", {"filter": "modality"}, {400}, "key:value"),
    ("filter empty value", {"filter": "modality:"}, {400}, "key:value"),
    ("filter empty key", {"filter": ":CR"}, {400}, "key:value"),
    ("filter weird key", {"filter": "a b;c:d"}, {200, 400}, ""),
    ("too many filters", {"filter": [f"k{i}:v" for i in range(30)]}, {400}, "filter"),
    ("label unknown", {"label": "NOPE"}, {200, 400}, ""),
    ("split too long", {"split": "s" * 40}, {400}, "split"),
    ("preview not a bool", {"preview": "maybe"}, {400}, "preview"),
]


@pytest.mark.parametrize(
    ("params", "expected", "fragment"),
    [pytest.param(p, e, f, id=i) for i, p, e, f in BAD_QUERY_PARAMS],
)
def test_bad_query_parameters(
    api: httpx.Client,
    ham_image: bytes,
    params: dict[str, Any],
    expected: set[int],
    fragment: str,
) -> None:
    response = api.post("/query", params=params, files={"file": ("q.jpg", ham_image)})
    body = assert_json_answer(response, expected)
    if response.status_code >= 400:
        assert fragment in body["detail"], body


BAD_REQUESTS: list[tuple[str, dict[str, Any], set[int]]] = [
    ("no file field", {"data": {"other": "x"}}, {400}),
    ("file as a text field", {"data": {"file": "not a file"}}, {400}),
    ("empty body", {"content": b""}, {400, 415}),
    ("json body", {"json": {"file": "aGVsbG8="}}, {400, 415}),
    (
        "urlencoded body",
        {
            "content": b"file=abc",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
        {400, 415},
    ),
    (
        "multipart without boundary",
        {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}},
        {400},
    ),
    (
        "broken multipart",
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
            "headers": {"Content-Type": "multipart/form-data; boundary=b"},
        },
        {400, 415, 422},
    ),
    (
        "binary body, image content type",
        {"content": b"\x89PNG\r\n\x1a\n", "headers": {"Content-Type": "image/png"}},
        {400, 415},
    ),
    (
        "image with an empty filename",
        {
            "content": multipart(b"\x89PNG\r\n\x1a\n", filename=""),
            "headers": {"Content-Type": "multipart/form-data; boundary=b0undary"},
        },
        {400, 422},
    ),
    (
        "two files",
        {"files": [("file", ("a.bin", b"abc")), ("file", ("b.bin", b"def"))]},
        {400, 415},
    ),
    ("1500 files", {"files": [("file", ("a", b"x"))] * 1500}, {400}),
    (
        "1500 fields",
        {"data": {f"f{i}": "x" for i in range(1500)}, "files": {"file": ("a", b"x")}},
        {400},
    ),
    ("2 MiB text field", {"data": {"file": "x" * 2 * MiB}}, {400}),
    ("path as file name", {"files": {"file": ("../../etc/passwd\x00.png", b"x")}}, {415}),
    ("bidi file name", {"files": {"file": ("\u00e9\u202egnp.exe", b"x")}}, {415}),
]


@pytest.mark.parametrize(
    ("kwargs", "expected"), [pytest.param(k, e, id=i) for i, k, e in BAD_REQUESTS]
)
def test_malformed_query_requests(
    api: httpx.Client, kwargs: dict[str, Any], expected: set[int]
) -> None:
    assert_json_answer(api.post("/query", **kwargs), expected)


def test_wrong_methods_and_unknown_paths(api: httpx.Client) -> None:
    assert_json_answer(api.get("/query"), {405})
    assert_json_answer(api.put("/query", content=b"x"), {405})
    assert_json_answer(api.post("/healthz", content=b"x" * 1000), {405})
    assert_json_answer(api.get("/no/such/page"), {404})
    assert_json_answer(api.get("/admin"), {404})
    assert_json_answer(api.get("/static/../../etc/passwd"), {404})


BAD_CASE_IDS = [
    "-1",
    "0",
    "99999999999999999999999999",
    str(2**63),
    "abc",
    "1.5",
    "1e3",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e",
    "%00",
    "%20",
    "999999",
]


@pytest.mark.parametrize("case_id", BAD_CASE_IDS)
@pytest.mark.parametrize("suffix", ["", "/image", "/thumbnail"])
def test_bad_case_ids_are_4xx(api: httpx.Client, case_id: str, suffix: str) -> None:
    response = api.get(f"/cases/{case_id}{suffix}")
    assert_json_answer(response, {400, 404})


def test_a_real_case_and_its_pictures(api: httpx.Client, ham_image: bytes) -> None:
    hit = api.post("/query", files={"file": ("q.jpg", ham_image)}).json()["cases"][0]
    assert api.get(f"/cases/{hit['case_id']}").status_code == 200
    assert api.get(f"/cases/{hit['case_id']}/image").status_code == 200
    assert api.get(f"/cases/{hit['case_id']}/thumbnail").status_code == 200
