"""The network and its files: the multi-scale Vision Transformer, its configuration,
pretrained weights, checkpoints, the device choice and the one inference path.

Training, indexing and serving all build the network from
:class:`model.config.ModelConfig`, exchange weights through :mod:`model.checkpoint` and
embed through :func:`model.inference.infer`. It imports only the packages below it
(:mod:`imaging` for the preprocessing description, :mod:`labels`, :mod:`files`); see
docs/architecture.md.
"""
