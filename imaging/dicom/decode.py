"""The DICOM decoder: read → check the header → decode one frame → display → describe.

``Columns × Rows`` is checked against ``max_pixels`` and the pixel data's completeness
(:mod:`imaging.dicom.frames`) before the chosen frame — and only that one — is decoded.
"""

from __future__ import annotations

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
from imaging.dicom.reading import read_dataset
from imaging.limits import DecodeLimits, check_pixel_count
from imaging.pixels import DecodedImage


def decode_dicom(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Decode the middle frame of the DICOM object in `data` to display-ready uint8."""
    dataset = read_dataset(data, limits)
    pixel_keyword = pixel_data_keyword(dataset)
    transfer_syntax = pixel_transfer_syntax(dataset, pixel_keyword)
    rows, columns = image_size(dataset)
    check_pixel_count(columns, rows, limits)
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
