"""Builders shared by the tests: DICOM files, images, archives, checkpoints and a live server."""
