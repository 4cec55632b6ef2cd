"""Archive scanning, batch embedding, FAISS indexes and the SQL metadata store (DESIGN.md §6).

Built in the indexer issue; it imports only :mod:`model`.
"""
