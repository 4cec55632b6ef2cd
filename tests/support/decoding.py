"""Decoding in tests: the error a decode raises, and the pixels of a built DICOM data set."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from imaging.decode import DecodedImage, DecodeLimits, ImageDecodeError, decode_image
from support.dicom import to_bytes


def decode_error(data: bytes, limits: DecodeLimits | None = None) -> ImageDecodeError:
    """The :class:`ImageDecodeError` that decoding `data` raises (the test fails if none)."""
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, limits or DecodeLimits())
    return caught.value


def decode_dataset(ds: Dataset, limits: DecodeLimits | None = None) -> DecodedImage:
    """`ds` written as Part 10 bytes and decoded."""
    return decode_image(to_bytes(ds), limits or DecodeLimits())


def grey_out(ds: Dataset) -> np.ndarray:
    """The decoded grey pixels of `ds` as (H, W), after checking the decoder's promises."""
    decoded = decode_dataset(ds)
    assert decoded.source_format == "DICOM"
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.ndim == 3
    assert decoded.pixels.shape[2] == 1
    assert decoded.pixels.flags.c_contiguous
    return decoded.pixels[:, :, 0]


def rgb_out(ds: Dataset) -> np.ndarray:
    """The decoded RGB pixels of `ds` as int32 (H, W, 3), ready for differences."""
    decoded = decode_dataset(ds)
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.shape[2] == 3
    return decoded.pixels.astype(np.int32)
