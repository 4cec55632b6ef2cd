"""The multi-scale Vision Transformer, image decoding, preprocessing and checkpoints.

This package is the base of the system: training, indexing and serving all build the
network from :class:`model.config.ModelConfig`, decode files with
:func:`model.decoding.decode_image`, turn pixels into tensors with
:func:`model.preprocessing.preprocess` and exchange weights through
:mod:`model.checkpoint`. It imports nothing from the other packages.
"""
