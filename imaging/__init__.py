"""Images in, pixels out: recognising formats, decoding rasters and DICOM within limits,
and the one preprocessing path that turns decoded pixels into the model's canvas.

Callers import :mod:`imaging.decode` (``decode_image``, ``decode_file`` and the types they
need) and :mod:`imaging.preprocessing`. Inside: :mod:`~imaging.errors`,
:mod:`~imaging.limits`, :mod:`~imaging.pixels` and :mod:`~imaging.windowing` are shared
by the decoders, :mod:`~imaging.formats` sniffs the format, :mod:`~imaging.raster` decodes
with Pillow and :mod:`imaging.dicom` with pydicom.
"""
