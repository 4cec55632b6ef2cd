"""DICOM → display-ready uint8 pixels and allowlisted, non-identifying metadata.

Reached through :func:`imaging.decode.decode_image`, which imports this package only when
a DICOM arrives. The modules, in the order a file meets them:

* :mod:`~imaging.dicom.reading` — pydicom's reading of the bytes (and the pydicom
  settings decoding relies on, applied by the first decode, never at import);
  :mod:`~imaging.dicom.deflate` inflates a deflated data set under a cap.
* :mod:`~imaging.dicom.frames` — the pixel data element, the image size, the frame shown
  and the integrity checks made before anything is decoded.
* :mod:`~imaging.dicom.codecs` — transfer syntaxes, their names, and the decoding plugins.
* :mod:`~imaging.dicom.display` — colour and palette to RGB; :mod:`~imaging.dicom.grey`
  the modality → VOI → MONOCHROME1 pipeline of grey images.
* :mod:`~imaging.dicom.metadata` — the metadata allowlist.
* :mod:`~imaging.dicom.decode` — :func:`~imaging.dicom.decode.decode_dicom`, which runs
  the steps above.

This package imports only the shared modules of :mod:`imaging` (errors, limits, pixels,
windowing), never the dispatcher, so there is no import cycle.
"""
