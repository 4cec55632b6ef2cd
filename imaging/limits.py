"""How large an input may be, and how much memory decodes may hold at once.

Each limit is checked before memory is spent on what it bounds:

* ``max_bytes``: the input's size, before anything is parsed (and by
  :func:`imaging.decode.decode_file` before the file is read).
* ``max_pixels``: width × height of one frame, from the header.
* ``max_decoded_bytes``: what the decoded samples occupy in their own type — rows ×
  columns × samples × bytes per sample × frames read (one frame, except a deflated DICOM,
  whose every frame is inflated) — from the header, before any pixel is decoded. A
  16-bit RGB image needs six bytes a pixel, so it reaches this limit at a third of the
  pixels an 8-bit grey one may have.
* ``max_sequence_items``: items of DICOM sequences, counted by a walk over the header
  before pydicom parses it (:mod:`imaging.dicom.outline`); a multi-frame object may have
  ``ITEMS_PER_FRAME`` more per frame.
* ``budget`` (:class:`DecodeBudget`): the bytes that all the decodes running at once in
  one process may hold. Each decode reserves what it will need (:func:`decode_cost`)
  before it allocates, and waits while others hold the rest; a caller that goes on
  working on the full-size pixels keeps the reservation with :func:`holding_reservations`.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from imaging.errors import DecodeErrorKind, ImageDecodeError

ITEMS_PER_FRAME = 16  # functional-group items of one frame of an enhanced multi-frame object
_MIB = 2**20
# What one decode holds beyond its pixels: the blocks of the per-pixel steps, the decoders'
# own buffers, the data set's other elements.
DECODE_OVERHEAD_BYTES = 24 * _MIB


class DecodeBudget:
    """Bytes that the decodes of one process may hold at once, shared by its threads.

    :meth:`reserve` blocks while other decodes hold too much of it, for at most
    ``wait_s`` seconds (then ``BUSY``); a single decode that needs more than the whole
    budget is ``TOO_LARGE`` at once. A budget sent to another process (the indexer's
    decoding workers) arrives there as a fresh budget of the same size.
    """

    def __init__(self, capacity_bytes: int, wait_s: float = 30.0) -> None:
        if capacity_bytes < 1 or wait_s < 0:
            raise ValueError(f"a decode budget needs a positive size, got {capacity_bytes}")
        self.capacity_bytes = capacity_bytes
        self.wait_s = wait_s
        self._held = 0
        self._changed = threading.Condition()

    def __reduce__(self) -> tuple[type[DecodeBudget], tuple[int, float]]:
        return (type(self), (self.capacity_bytes, self.wait_s))

    def __repr__(self) -> str:
        return f"DecodeBudget({self.capacity_bytes / _MIB:.0f} MiB, held {self.held_bytes})"

    @property
    def held_bytes(self) -> int:
        with self._changed:
            return self._held

    @contextmanager
    def reserve(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold `nbytes` of the budget for the duration of the block."""
        if nbytes > self.capacity_bytes:
            raise ImageDecodeError(
                f"decoding this {what} needs about {nbytes / _MIB:.0f} MiB, more than the "
                f"{self.capacity_bytes / _MIB:.0f} MiB this server gives to decoding; "
                "send a smaller image",
                DecodeErrorKind.TOO_LARGE,
            )
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            while self._held + nbytes > self.capacity_bytes:
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    if self._held + nbytes <= self.capacity_bytes:
                        break
                    raise ImageDecodeError(
                        f"the server is busy decoding other large images (waited "
                        f"{self.wait_s:.0f} s for {nbytes / _MIB:.0f} MiB); retry in a moment",
                        DecodeErrorKind.BUSY,
                    )
            self._held += nbytes
        try:
            yield
        finally:
            with self._changed:
                self._held -= nbytes
                self._changed.notify_all()


@dataclass(frozen=True)
class DecodeLimits:
    """Refuse inputs over these sizes before spending memory on them."""

    max_bytes: int = 512 * _MIB
    max_pixels: int = 100_000_000  # per decoded frame (width * height)
    max_decoded_bytes: int = 2**30  # samples of the frames read, in their own type
    max_sequence_items: int = 10_000  # DICOM sequence items, plus ITEMS_PER_FRAME per frame
    budget: DecodeBudget | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        sizes = (self.max_bytes, self.max_pixels, self.max_decoded_bytes, self.max_sequence_items)
        if min(sizes) < 1:
            raise ValueError(f"limits must be positive, got {self}")

    @contextmanager
    def reserved(self, nbytes: int, what: str) -> Iterator[None]:
        """Hold `nbytes` of the budget (if there is one) while the block decodes — or, inside
        :func:`holding_reservations`, until that block ends."""
        if self.budget is None:
            yield
            return
        holder = _holder.get()
        if holder is not None:
            holder.enter_context(self.budget.reserve(nbytes, what))
            yield
            return
        with self.budget.reserve(nbytes, what):
            yield


_holder: contextvars.ContextVar[ExitStack | None] = contextvars.ContextVar(
    "decode_reservations", default=None
)


@contextmanager
def holding_reservations() -> Iterator[None]:
    """Keep the decode budget reserved by decodes in this block until the block ends, so
    that work on the full-size pixels after the decode (the resize to the model's canvas)
    stays within the budget too."""
    with ExitStack() as stack:
        token = _holder.set(stack)
        try:
            yield
        finally:
            _holder.reset(token)


DEFAULT_LIMITS = DecodeLimits()


def decode_cost(source_bytes: int, pixels: int, channels: int, copies: int = 2) -> int:
    """What a decode holds at its peak: `copies` of the decoded samples in their own type
    (the decoder's and ours), the uint8 result (`pixels` × `channels`), one float32 channel
    of it (the resize of :func:`imaging.preprocessing.fit_to_canvas`, when the caller holds
    the reservation over it: :func:`holding_reservations`) and
    :data:`DECODE_OVERHEAD_BYTES`."""
    return copies * source_bytes + pixels * channels + 4 * pixels + DECODE_OVERHEAD_BYTES


def check_byte_count(byte_count: int, limits: DecodeLimits) -> None:
    """Raise ``TOO_LARGE`` when `byte_count` is over ``limits.max_bytes``."""
    if byte_count > limits.max_bytes:
        raise ImageDecodeError(
            f"input is {byte_count} bytes ({byte_count / _MIB:.1f} MiB), over the limit of "
            f"{limits.max_bytes} bytes ({limits.max_bytes / _MIB:.1f} MiB)",
            DecodeErrorKind.TOO_LARGE,
        )


def check_pixel_count(width: int, height: int, limits: DecodeLimits) -> None:
    """Raise ``TOO_LARGE`` when one frame of `width` × `height` is over ``max_pixels``."""
    pixel_count = width * height
    if pixel_count > limits.max_pixels:
        raise ImageDecodeError(
            f"image is {width} x {height} = {pixel_count} pixels, over the limit of "
            f"{limits.max_pixels}",
            DecodeErrorKind.TOO_LARGE,
        )


def check_decoded_bytes(decoded_bytes: int, description: str, limits: DecodeLimits) -> None:
    """Raise ``TOO_LARGE`` when the decoded samples would be over ``max_decoded_bytes``.

    `description` says what was counted, e.g. "8000 x 8000 pixels x 3 samples x 2 bytes".
    """
    if decoded_bytes > limits.max_decoded_bytes:
        raise ImageDecodeError(
            f"image decodes to {description} = {decoded_bytes / _MIB:.0f} MiB, over the limit "
            f"of {limits.max_decoded_bytes / _MIB:.0f} MiB",
            DecodeErrorKind.TOO_LARGE,
        )
