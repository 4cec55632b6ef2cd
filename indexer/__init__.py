"""Archive scanning, batch embedding, FAISS indexes and the SQL metadata store (docs/indexer.md).

It imports only the layers below it (``model``, ``archives``, ``imaging``, ``labels``,
``files``, ``commandline``; docs/architecture.md), never ``training`` or ``app``.
"""
