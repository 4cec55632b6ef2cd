"""The FastAPI service and the viewer page (docs/service.md).

Built in the service issue; it imports :mod:`model` and :mod:`indexer`, and nothing
imports it (``medret serve`` starts it by name).
"""
