"""Datasets, losses, the phased schedule and the training loop (DESIGN.md §3-4).

Built in the training issue; it imports only :mod:`model`.
"""
