"""Small uploads that are expensive to decode, against a live server: refused from the
header when over the limits, and within the memory goal when accepted — alone and eight
at once (the figures of bench/decode_memory.py, with the issue's goals as bounds)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from support.expensive_inputs import constant_png, deflated_image, functional_groups_flood
from support.memory import post_and_measure, tiny_service
from support.server import LiveServer, start_server

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc (Linux)")

MB = 10**6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("decode-memory")
    env = tiny_service(root)
    with start_server(env, root / "server.log") as live:
        yield live


def _goal(uint8_bytes: int) -> int:
    return 8 * uint8_bytes + 64 * MB


def test_deflated_16_bit_rgb_over_the_decoded_limit_is_413_and_costs_nothing(
    server: LiveServer,
) -> None:
    measured = post_and_measure(server.url, server.process.pid, deflated_image(8000, 8000))
    assert measured.statuses == (413,)
    assert measured.details[0].startswith(
        "image decodes to 8000 x 8000 pixels x 3 sample(s) x 16 bits = 366 MiB"
    )
    assert measured.peak_increase < 64 * MB


@pytest.mark.parametrize(
    ("name", "data", "uint8_bytes"),
    [
        ("deflated 16-bit RGB 4000²", deflated_image(4000, 4000), 4000 * 4000 * 3),
        ("RGBA PNG 4000²", constant_png(4000, "RGBA"), 4000 * 4000 * 3),
    ],
)
def test_accepted_expensive_upload_stays_within_its_memory_goal(
    server: LiveServer, name: str, data: bytes, uint8_bytes: int
) -> None:
    measured = post_and_measure(server.url, server.process.pid, data)
    assert measured.statuses == (200,), measured.details
    assert measured.peak_increase <= _goal(uint8_bytes), f"{name}: {measured.peak_increase} B"


def test_eight_expensive_uploads_at_once_stay_under_2_gb(server: LiveServer) -> None:
    measured = post_and_measure(
        server.url, server.process.pid, deflated_image(4000, 4000), copies=8
    )
    assert set(measured.statuses) == {200}, measured.details
    assert measured.peak_increase < 2000 * MB


def test_functional_group_flood_is_422_at_once(server: LiveServer) -> None:
    measured = post_and_measure(server.url, server.process.pid, functional_groups_flood(500_000))
    assert measured.statuses == (422,)
    assert "more items than the 1 frame(s) the object declares" in measured.details[0]
    assert measured.peak_increase < 64 * MB
