"""The ``medret`` command line: one entry point over training, indexing and serving."""
