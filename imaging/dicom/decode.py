"""The DICOM decoder: open (walk the header) → check sizes → read → decode one frame →
display → describe.

Sizes come from the header walk (:func:`imaging.dicom.reading.open_dataset`) before
pydicom allocates anything: ``Columns × Rows`` against ``max_pixels``, and the decoded
samples (one frame, or every frame of a deflated data set, which inflates whole) against
``max_decoded_bytes``. The decode then holds its share of the decode budget
(:func:`imaging.limits.decode_cost`) while it reads and decodes. The pixel data's
completeness (:mod:`imaging.dicom.frames`) is checked before the chosen frame — and only
that one — is decoded.
"""

from __future__ import annotations

from imaging.dicom.attributes import int_attribute
from imaging.dicom.codecs import decode_frame, decoder_for
from imaging.dicom.display import display_pixels
from imaging.dicom.frames import (
    check_frame_is_complete,
    check_native_length,
    choose_frame_index,
    image_size,
    number_of_frames,
    pixel_data_keyword,
    pixel_transfer_syntax,
)
from imaging.dicom.metadata import describe_dicom
from imaging.dicom.outline import Outline
from imaging.dicom.reading import OpenedDataset, open_dataset
from imaging.limits import DecodeLimits, check_decoded_bytes, check_pixel_count, decode_cost
from imaging.pixels import DecodedImage


def decode_dicom(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Decode the middle frame of the DICOM object in `data` to display-ready uint8."""
    opened = open_dataset(data, limits)
    with limits.reserved(dicom_cost(opened, limits), "DICOM"):
        return _decode(opened, limits)


def dicom_cost(opened: OpenedDataset, limits: DecodeLimits) -> int:
    """The decode's share of the budget; ``TOO_LARGE`` over ``max_pixels`` or
    ``max_decoded_bytes`` (unknown sizes are checked again once pydicom has read them)."""
    outline = opened.outline
    frame_bytes = outline.frame_bytes()
    if frame_bytes is None or outline.rows is None or outline.columns is None:
        return decode_cost(0, 0, 1) + (opened.deflated.cap() if opened.deflated else 0)
    check_pixel_count(outline.columns, outline.rows, limits)
    frames_read = max(1, outline.frames or 1) if opened.deflated is not None else 1
    check_decoded_bytes(frame_bytes * frames_read, _described(outline, frames_read), limits)
    pixels = outline.rows * outline.columns
    channels = 3 if (outline.samples or 1) > 1 else 1
    if opened.deflated is not None:  # the inflated body, and pydicom's copy of the pixels
        return decode_cost(frame_bytes, pixels, channels) + 2 * opened.deflated.cap()
    return decode_cost(frame_bytes, pixels, channels, copies=3)


def _described(outline: Outline, frames: int) -> str:
    bits = outline.bits_allocated or 8
    text = (
        f"{outline.columns} x {outline.rows} pixels x {outline.samples or 1} sample(s) x "
        f"{bits} bits"
    )
    return text + (f" x {frames} frames" if frames > 1 else "")


def _decode(opened: OpenedDataset, limits: DecodeLimits) -> DecodedImage:
    dataset = opened.read()
    pixel_keyword = pixel_data_keyword(dataset)
    transfer_syntax = pixel_transfer_syntax(dataset, pixel_keyword)
    rows, columns = image_size(dataset)
    check_pixel_count(columns, rows, limits)
    if not opened.outline.complete:  # the walk did not see the sizes: check them now
        samples = int_attribute(dataset, "SamplesPerPixel") or 1
        bits = int_attribute(dataset, "BitsAllocated") or 8
        described = f"{columns} x {rows} pixels x {samples} sample(s) x {bits} bits"
        check_decoded_bytes(rows * columns * samples * bits // 8, described, limits)
    frame_count = number_of_frames(dataset)
    frame_index = choose_frame_index(frame_count)
    decoder = decoder_for(transfer_syntax)
    if transfer_syntax.is_encapsulated:
        check_frame_is_complete(dataset, pixel_keyword, transfer_syntax, frame_index, frame_count)
    else:
        check_native_length(dataset, pixel_keyword, rows, columns, frame_count)
    frame, photometric = decode_frame(decoder, dataset, transfer_syntax, frame_index, frame_count)
    pixels = display_pixels(frame, photometric, dataset, frame_index)
    metadata = describe_dicom(dataset, transfer_syntax, frame_index, frame_count)
    return DecodedImage(pixels=pixels, source_format="DICOM", metadata=metadata)
