"""The decode budget and the limits checked from the header: refused before memory is
spent, and decodes that hold no more than their share."""

from __future__ import annotations

import pickle
import threading
import time
import tracemalloc

import numpy as np
import pytest

from imaging.decode import DecodeErrorKind, DecodeLimits, ImageDecodeError, decode_image
from imaging.limits import DecodeBudget, holding_reservations
from imaging.png_chunks import without_unused_chunks
from support.decoding import decode_error
from support.dicom import make_dataset, to_bytes
from support.expensive_inputs import (
    constant_png,
    deflated_image,
    functional_groups_flood,
    png_with_ancillary,
)

MIB = 2**20


# --------------------------------------------------------------------------- the budget


def test_budget_makes_a_second_decode_wait_for_the_first() -> None:
    budget = DecodeBudget(100 * MIB, wait_s=10)
    order: list[str] = []
    first_holds = threading.Event()

    def first() -> None:
        with budget.reserve(80 * MIB, "image"):
            first_holds.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    first_holds.wait(5)
    with budget.reserve(40 * MIB, "image"):  # 80 + 40 > 100: waits for the first
        order.append("second starts")
    thread.join()
    assert order == ["first done", "second starts"]
    assert budget.held_bytes == 0


def test_budget_lets_small_decodes_run_together() -> None:
    budget = DecodeBudget(100 * MIB, wait_s=0)
    with budget.reserve(40 * MIB, "image"), budget.reserve(40 * MIB, "image"):
        assert budget.held_bytes == 80 * MIB
    assert budget.held_bytes == 0


def test_budget_refuses_a_decode_larger_than_itself_and_gives_up_waiting() -> None:
    budget = DecodeBudget(100 * MIB, wait_s=0.2)
    with pytest.raises(ImageDecodeError) as too_large, budget.reserve(101 * MIB, "DICOM"):
        pass
    assert too_large.value.kind is DecodeErrorKind.TOO_LARGE
    assert "needs about 101 MiB, more than the 100 MiB" in str(too_large.value)
    with budget.reserve(90 * MIB, "image"):
        started = time.monotonic()
        with pytest.raises(ImageDecodeError) as busy, budget.reserve(20 * MIB, "image"):
            pass
        assert time.monotonic() - started >= 0.2
    assert busy.value.kind is DecodeErrorKind.BUSY
    assert "retry in a moment" in str(busy.value)
    assert budget.held_bytes == 0


def test_decode_reserves_the_budget_and_releases_it() -> None:
    budget = DecodeBudget(64 * MIB, wait_s=0)
    limits = DecodeLimits(budget=budget)
    image = constant_png(2000, "RGBA")  # needs more than 64 MiB with its canvas
    error = decode_error(image, limits)
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert "more than the 64 MiB this server gives to decoding" in str(error)
    roomy = DecodeLimits(budget=DecodeBudget(512 * MIB, wait_s=0))
    with holding_reservations():
        decode_image(image, roomy)
        assert roomy.budget is not None
        assert roomy.budget.held_bytes > 2000 * 2000 * 4
    assert roomy.budget.held_bytes == 0
    decode_image(image, roomy)
    assert roomy.budget.held_bytes == 0


def test_limits_with_a_budget_travel_to_worker_processes() -> None:
    limits = DecodeLimits(max_pixels=1000, budget=DecodeBudget(10 * MIB, wait_s=3))
    copied = pickle.loads(pickle.dumps(limits))
    assert copied == limits  # the budget does not take part in equality
    assert copied.budget is not None
    assert copied.budget is not limits.budget
    assert (copied.budget.capacity_bytes, copied.budget.wait_s) == (10 * MIB, 3)


# --------------------------------------------------------------------------- header limits


def test_deflated_16_bit_rgb_is_refused_from_its_header_before_inflating() -> None:
    data = deflated_image(8000, 8000)  # 371 KB that inflate to 366 MiB
    tracemalloc.start()
    try:
        error = decode_error(data, DecodeLimits(max_pixels=64_000_000, max_decoded_bytes=256 * MIB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert str(error) == (
        "image decodes to 8000 x 8000 pixels x 3 sample(s) x 16 bits = 366 MiB, over the "
        "limit of 256 MiB"
    )
    assert peak < 8 * MIB  # only the header was inflated


def test_decoded_bytes_count_samples_and_their_size() -> None:
    grey = constant_png(1000, "L")
    grey16 = constant_png(1000, "I;16")
    limits = DecodeLimits(max_decoded_bytes=1_500_000)  # 1.5 bytes a pixel
    assert decode_image(grey, limits).pixels.shape == (1000, 1000, 1)
    error = decode_error(grey16, limits)
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert "1000 x 1000 pixels x 1 band(s) x 2 byte(s) = 2 MiB" in str(error)
    ds = make_dataset(np.zeros((100, 100, 3), np.uint16), "RGB")
    error = decode_error(to_bytes(ds), DecodeLimits(max_decoded_bytes=59_999))
    assert "100 x 100 pixels x 3 sample(s) x 16 bits = 0 MiB, over the limit" in str(error)
    assert decode_image(to_bytes(ds), DecodeLimits(max_decoded_bytes=60_000)).pixels.shape == (
        100,
        100,
        3,
    )


def test_functional_group_flood_is_refused_before_pydicom_parses_it() -> None:
    flood = functional_groups_flood(500_000)  # 4 MB of empty items, one frame
    assert len(flood) > 3_900_000
    started = time.perf_counter()
    tracemalloc.start()
    try:
        error = decode_error(flood)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.kind is DecodeErrorKind.CORRUPT
    assert "Per-frame Functional Groups Sequence has more items than the 1 frame(s)" in str(error)
    assert time.perf_counter() - started < 2.0
    assert peak < 16 * MIB  # pydicom would have built 500,000 data sets (~320 MB)


def test_sequence_items_are_bounded_without_a_frame_count() -> None:
    ds = make_dataset(np.zeros((8, 8), np.uint8))
    few = [make_dataset() for _ in range(50)]
    ds.ReferencedImageSequence = few
    assert decode_image(to_bytes(ds), DecodeLimits(max_sequence_items=50)).pixels.shape[:2] == (
        8,
        8,
    )
    error = decode_error(to_bytes(ds), DecodeLimits(max_sequence_items=49 - 16))
    assert error.kind is DecodeErrorKind.TOO_LARGE
    assert "more than 49 sequence items" in str(error)


# --------------------------------------------------------------------------- PNG chunks


@pytest.mark.parametrize("chunk", [b"zTXt", b"iCCP"])
def test_png_with_an_oversized_ancillary_chunk_decodes(chunk: bytes) -> None:
    image = png_with_ancillary(chunk, 100 * MIB)  # inflates past Pillow's text limit
    decoded = decode_image(image)
    assert decoded.pixels.shape == (32, 32, 3)
    assert decoded.pixels[0, 0].tolist() == [200, 40, 40]
    stripped = without_unused_chunks(image)
    assert chunk not in stripped
    assert len(stripped) < len(image)


def test_png_without_such_chunks_is_passed_on_unchanged() -> None:
    image = constant_png(16, "RGB")
    assert without_unused_chunks(image) is image
    broken = image[:40]  # a chunk cut short: left for Pillow to report
    assert without_unused_chunks(broken) is broken
    assert decode_error(broken).kind is DecodeErrorKind.CORRUPT
