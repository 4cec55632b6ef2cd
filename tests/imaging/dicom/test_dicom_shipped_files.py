"""pydicom's own shipped test files: each one decodes, or fails, as inspected."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest

from imaging.decode import DecodeErrorKind, ImageDecodeError, decode_image
from support.decoding import decode_error
from support.dicom import PYDICOM_TEST_FILES

# --------------------------------------------------------------------------- pydicom's files


def _inspect_expectations() -> dict[str, object]:
    """What each of pydicom's shipped files must give (inspected one by one).

    A tuple (rows, columns, channels) means it decodes to that shape; a (kind, fragment)
    pair means it raises ImageDecodeError of that kind with that message fragment; None
    means it may either decode or raise ImageDecodeError (odd files).
    """
    no_pixels = (DecodeErrorKind.CORRUPT, "no pixel data")
    not_image = (DecodeErrorKind.NOT_AN_IMAGE, "not an image")
    return {
        "693_J2KI.dcm": (512, 512, 1),
        "CT_small.dcm": (128, 128, 1),
        "ExplVR_BigEnd.dcm": (60, 80, 3),
        "ExplVR_BigEndNoMeta.dcm": no_pixels,
        "ExplVR_LitEndNoMeta.dcm": no_pixels,
        "GDCMJ2K_TextGBR.dcm": (400, 400, 3),
        "J2K_pixelrep_mismatch.dcm": None,
        "JPEG-lossy.dcm": (DecodeErrorKind.CORRUPT, "JPEG stream"),  # invalid SOS parameters
        "JPEG2000-embedded-sequence-delimiter.dcm": (DecodeErrorKind.CORRUPT, "JPEG 2000"),
        "JPEG2000.dcm": (1024, 256, 1),
        "JPEGLSNearLossless_08.dcm": (45, 10, 1),
        "JPEGLSNearLossless_16.dcm": (50, 10, 1),
        "JPGExtended.dcm": (1024, 256, 1),
        "MR_small.dcm": (64, 64, 1),
        "MR_small_RLE.dcm": (64, 64, 1),
        "MR_small_bigendian.dcm": (64, 64, 1),
        "MR_small_expb.dcm": (64, 64, 1),
        "MR_small_implicit.dcm": (64, 64, 1),
        "MR_small_jp2klossless.dcm": (64, 64, 1),
        "MR_small_jpeg_ls_lossless.dcm": (64, 64, 1),
        "MR_small_padded.dcm": (64, 64, 1),
        "MR_truncated.dcm": (DecodeErrorKind.CORRUPT, "holds only 8130 bytes"),
        "README.txt": not_image,
        "SC_jpeg_no_color_transform.dcm": (256, 256, 3),
        "SC_jpeg_no_color_transform_2.dcm": (256, 256, 3),
        "SC_rgb_dcmtk_+eb+cr.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+n1.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+n2.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+np.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+s2.dcm": (100, 100, 3),
        "SC_rgb_dcmtk_+eb+cy+s4.dcm": (100, 100, 3),
        "SC_rgb_gdcm_KY.dcm": (100, 100, 3),
        "SC_rgb_jls_lossy_line.dcm": (100, 100, 3),
        "SC_rgb_jls_lossy_sample.dcm": (100, 100, 3),
        "SC_rgb_jpeg.dcm": (256, 256, 3),
        "SC_rgb_jpeg_app14_dcmd.dcm": (256, 256, 3),
        "SC_rgb_jpeg_dcmd.dcm": (256, 256, 3),
        "SC_rgb_jpeg_dcmtk.dcm": (100, 100, 3),
        "SC_rgb_jpeg_gdcm.dcm": (100, 100, 3),
        "SC_rgb_jpeg_lossy_gdcm.dcm": (100, 100, 3),
        "SC_rgb_rle.dcm": (100, 100, 3),
        "SC_rgb_rle_16bit.dcm": (100, 100, 3),
        "SC_rgb_rle_16bit_2frame.dcm": (100, 100, 3),
        "SC_rgb_rle_2frame.dcm": (100, 100, 3),
        "SC_rgb_rle_32bit.dcm": (100, 100, 3),
        "SC_rgb_rle_32bit_2frame.dcm": (100, 100, 3),
        "SC_rgb_small_odd.dcm": (3, 3, 3),
        "SC_rgb_small_odd_big_endian.dcm": (3, 3, 3),
        "SC_rgb_small_odd_jpeg.dcm": (3, 3, 3),
        "SC_ybr_full_422_uncompressed.dcm": (100, 100, 3),
        "UN_sequence.dcm": no_pixels,
        "badVR.dcm": None,  # Number of Frames '1A'
        "crayons.icc": not_image,
        "empty_charset_LEI.dcm": no_pixels,
        "examples_jpeg2k.dcm": (480, 640, 3),
        "examples_overlay.dcm": (300, 484, 1),
        "examples_palette.dcm": (350, 800, 3),
        "examples_rgb_color.dcm": (240, 320, 3),
        "examples_ybr_color.dcm": (240, 320, 3),
        "image_dfl.dcm": (512, 512, 1),
        "liver_1frame.dcm": (512, 512, 1),
        "liver_expb_1frame.dcm": (512, 512, 1),
        "meta_missing_tsyntax.dcm": None,
        "nested_priv_SQ.dcm": (DecodeErrorKind.CORRUPT, "no valid size"),
        "no_meta.dcm": not_image,  # its first byte is not a DICOM tag
        "no_meta_group_length.dcm": no_pixels,
        "priv_SQ.dcm": no_pixels,
        "reportsi.dcm": no_pixels,
        "reportsi_with_empty_number_tags.dcm": no_pixels,
        "rtdose.dcm": (10, 10, 1),
        "rtdose_1frame.dcm": (10, 10, 1),
        "rtdose_expb.dcm": (10, 10, 1),
        "rtdose_expb_1frame.dcm": (10, 10, 1),
        "rtdose_rle.dcm": (10, 10, 1),
        "rtdose_rle_1frame.dcm": (10, 10, 1),
        "rtplan.dcm": no_pixels,
        "rtplan.dump": not_image,
        "rtplan_truncated.dcm": no_pixels,
        "rtstruct.dcm": no_pixels,
        "rtstruct.dump": not_image,
        "test-SR.dcm": no_pixels,
        "test1.json": not_image,
        "test_PN.json": not_image,
        "waveform_ecg.dcm": no_pixels,
        "zipMR.gz": not_image,
    }


EXPECTATIONS = _inspect_expectations()
SHIPPED_FILES = sorted(p.name for p in PYDICOM_TEST_FILES.iterdir() if p.is_file())


@pytest.mark.parametrize("name", SHIPPED_FILES)
def test_pydicom_shipped_file(name: str) -> None:
    data = (PYDICOM_TEST_FILES / name).read_bytes()
    expected = EXPECTATIONS.get(name, None)
    if expected is None:
        if name not in EXPECTATIONS and name.endswith(".dcm"):
            pytest.fail(f"{name} is new in this pydicom: inspect it and add an expectation")
        try:
            decoded = decode_image(data)
        except ImageDecodeError:
            return
        assert decoded.pixels.dtype == np.uint8
        return
    if isinstance(expected, tuple) and isinstance(expected[0], DecodeErrorKind):
        kind, fragment = expected
        error = decode_error(data)
        assert error.kind is kind
        assert str(fragment) in str(error)
        return
    decoded = decode_image(data)
    assert decoded.pixels.shape == expected
    assert decoded.pixels.dtype == np.uint8
    assert decoded.pixels.max() > decoded.pixels.min()  # something is visible
    assert decoded.metadata["rows"] == str(expected[0])


def test_shipped_multiframe_files_show_the_middle_frame() -> None:
    decoded = decode_image((PYDICOM_TEST_FILES / "rtdose.dcm").read_bytes())
    assert decoded.metadata["number_of_frames"] == "15"
    assert decoded.metadata["frame_index"] == "7"
    decoded = decode_image((PYDICOM_TEST_FILES / "examples_ybr_color.dcm").read_bytes())
    assert decoded.metadata["frame_index"] == "15"


def test_same_image_in_every_shipped_mr_encoding_decodes_identically() -> None:
    names = [
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ]
    reference = decode_image((PYDICOM_TEST_FILES / names[0]).read_bytes()).pixels
    for name in names[1:]:
        assert np.array_equal(
            decode_image((PYDICOM_TEST_FILES / name).read_bytes()).pixels, reference
        )


def test_decoding_does_not_leave_warning_filters_changed() -> None:
    before = list(warnings.filters)
    for name in ("badVR.dcm", "CT_small.dcm", "rtplan.dcm"):
        with contextlib.suppress(ImageDecodeError):
            decode_image((PYDICOM_TEST_FILES / name).read_bytes())
    assert list(warnings.filters) == before
