"""Images in, pixels out: recognising formats, decoding rasters and DICOM within limits,
and the one preprocessing path that turns decoded pixels into the model's canvas."""
