"""Training and evaluating the network: the pixel cache, losses, the phased schedule, the
loop and the evaluation reports (docs/training.md).

It sits above :mod:`model` and :mod:`archives` and beside :mod:`indexer`, which it never
imports (docs/architecture.md).
"""
