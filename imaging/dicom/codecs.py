"""Transfer syntaxes: their names, which decoder handles each, and decoding one frame.

pydicom's plugins are tried in the order pylibjpeg, pyjpegls, pydicom, pillow; the first
that succeeds wins. gdcm is never used: on some malformed streams it throws a C++
exception that aborts the whole process (found by fuzzing), which a server must not
allow. Transfer syntaxes without a decoder (MPEG, HEVC, JPEG XL, private UIDs) are
``UNSUPPORTED``.
"""

from __future__ import annotations

import logging

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from imaging.dicom.attributes import uid_text
from imaging.errors import (
    DecodeErrorKind,
    ImageDecodeError,
    corrupt,
    is_library_panic,
    safe_error_text,
)

logger = logging.getLogger(__name__)

# Decoding plugins, most preferred first. gdcm is never used: on some malformed streams it
# throws a C++ exception that aborts the whole process, which a server must not allow.
EXCLUDED_PLUGINS = frozenset({"gdcm"})
PLUGIN_PREFERENCE = ("pylibjpeg", "pyjpegls", "pydicom", "pillow")

_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins:"

# Transfer syntaxes newer than this pydicom's UID dictionary (named in error messages).
_NEWER_TRANSFER_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}


def transfer_syntax_name(transfer_syntax: UID) -> str | None:
    """The standard name of `transfer_syntax`, or ``None`` for an unknown/private UID."""
    if transfer_syntax.name != str(transfer_syntax):
        return transfer_syntax.name
    return _NEWER_TRANSFER_SYNTAX_NAMES.get(str(transfer_syntax))


def codec_name(transfer_syntax: UID) -> str:
    """A person's name for the compression of `transfer_syntax` ("native" if none)."""
    if transfer_syntax in JPEG2000TransferSyntaxes:
        return "JPEG 2000"
    if transfer_syntax in JPEGLSTransferSyntaxes:
        return "JPEG-LS"
    if transfer_syntax in JPEGTransferSyntaxes:
        return "JPEG"
    if transfer_syntax == RLELossless:
        return "RLE"
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return "deflate"
    return "native"


def decoder_for(transfer_syntax: UID) -> Decoder:
    """pydicom's decoder for `transfer_syntax`; ``UNSUPPORTED`` if there is none installed."""
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        raise _unsupported_transfer_syntax(transfer_syntax) from None
    if not decoder.is_available:
        raise _unsupported_transfer_syntax(transfer_syntax, "no decoder is installed")
    return decoder


def _unsupported_transfer_syntax(transfer_syntax: UID, reason: str = "") -> ImageDecodeError:
    name = transfer_syntax_name(transfer_syntax)
    if name is not None:
        label = f"{name} ({transfer_syntax})"
    else:
        label = f"{uid_text(transfer_syntax)} (unknown or private UID)"
    suffix = f": {reason}" if reason else ""
    return ImageDecodeError(
        f"unsupported transfer syntax {label}{suffix}", DecodeErrorKind.UNSUPPORTED
    )


def decode_frame(
    decoder: Decoder,
    dataset: Dataset,
    transfer_syntax: UID,
    frame_index: int,
    frame_count: int,
) -> tuple[np.ndarray, str]:
    """Decode one frame; returns it with the photometric interpretation it now has."""
    options = as_pixel_options(dataset, number_of_frames=frame_count)
    if decoder.is_native:
        frame, properties = decoder.as_array(dataset, index=frame_index, **options)
        return frame, str(properties["photometric_interpretation"])
    failures: list[str] = []
    for plugin in _plugins_in_preferred_order(decoder):
        try:
            frame, properties = decoder.as_array(
                dataset, index=frame_index, decoding_plugin=plugin, **options
            )
        except MemoryError:
            raise
        except BaseException as exc:  # try the next plugin; report the first failure
            if not isinstance(exc, Exception) and not is_library_panic(exc):
                raise  # KeyboardInterrupt, SystemExit, …
            failures.append(_plugin_failure(plugin, exc))
            logger.debug("DICOM plugin %s failed: %s", plugin, exc)
            continue
        return frame, str(properties["photometric_interpretation"])
    detail = failures[0] if failures else "no decoding plugin"
    raise corrupt(f"truncated or corrupt {codec_name(transfer_syntax)} stream: {detail[:300]}")


def _plugin_failure(plugin: str, exc: BaseException) -> str:
    """One line naming the plugin, without pydicom's "raised by all plugins" preamble."""
    text = safe_error_text(str(exc).replace(_ALL_PLUGINS_FAILED, "")).strip()
    return text if text.startswith(f"{plugin}:") else f"{plugin}: {text}"


def _plugins_in_preferred_order(decoder: Decoder) -> list[str]:
    def rank(name: str) -> int:
        known = name in PLUGIN_PREFERENCE
        return PLUGIN_PREFERENCE.index(name) if known else len(PLUGIN_PREFERENCE)

    usable = [name for name in decoder.available_plugins if name not in EXCLUDED_PLUGINS]
    return sorted(usable, key=rank)
