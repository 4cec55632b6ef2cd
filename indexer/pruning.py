"""Pruning a collection's index versions: the files of old, failed and abandoned builds."""

from __future__ import annotations

import shutil
from pathlib import Path

from indexer.store import CollectionInfo, MetadataStore, VersionState
from indexer.version_folders import collection_folder, remove_leftovers


def prune_versions(
    store: MetadataStore, data_dir: Path, collection: CollectionInfo, keep: int
) -> list[int]:
    """Delete the files of all but the active and the ``keep`` newest ready versions, and
    of failed or abandoned builds; returns the version numbers pruned."""
    versions = sorted(store.list_versions(collection.id), key=lambda v: v.version, reverse=True)
    kept_ready = 0
    pruned_ids, pruned_numbers = [], []
    for v in versions:
        if v.is_active:
            continue
        if v.state == VersionState.READY and kept_ready < keep:
            kept_ready += 1
            continue
        if v.state == VersionState.PRUNED:
            continue
        shutil.rmtree(v.path, ignore_errors=True)
        pruned_ids.append(v.id)
        pruned_numbers.append(v.version)
    remove_leftovers(collection_folder(data_dir, collection.name))
    if pruned_ids:
        store.mark_pruned(pruned_ids)
    return pruned_numbers
