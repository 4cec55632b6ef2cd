"""``medret index``: build, extend, prune and inspect versioned indexes."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from indexer.builder import IndexBuilder, IndexBuildError, IndexerConfig
from indexer.store import MetadataStore, StoreError
from indexer.vector_index import VectorIndexError
from model.archives import ArchiveError
from model.checkpoint import CheckpointError


class CommandError(Exception):
    """An expected failure, reported as one line with exit status 2."""


EXPECTED = (IndexBuildError, StoreError, VectorIndexError, ArchiveError, CheckpointError)


def database_url(data_dir: Path, url: str | None) -> str:
    return url or f"sqlite:///{(data_dir / 'medret.db').resolve()}"


def open_store(args: argparse.Namespace) -> MetadataStore:
    args.data_dir.mkdir(parents=True, exist_ok=True)
    return MetadataStore.open(database_url(args.data_dir, args.db))


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def run_index(args: argparse.Namespace) -> int:
    try:
        store = open_store(args)
        try:
            return _dispatch(args, store)
        finally:
            store.close()
    except EXPECTED as exc:
        raise CommandError(str(exc)) from exc


def _dispatch(args: argparse.Namespace, store: MetadataStore) -> int:
    if args.list:
        _print(_listing(store, args.collection))
        return 0
    if not args.collection:
        raise CommandError("--collection is required")
    builder = IndexBuilder(
        store,
        IndexerConfig(
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            factory=args.index_factory,
            group_salt=os.environ.get("MEDRET_GROUP_SALT", "medret"),
        ),
    )
    if args.jobs:
        store.reap_stale_jobs()
        coll = store.get_collection(args.collection)
        _print([_job(j) for j in store.list_jobs(coll.id)])
        return 0
    if args.prune:
        _print({"pruned_versions": builder.prune(args.collection, keep=args.keep)})
        return 0
    if args.remove:
        case_ids = [int(x) for x in args.remove if x.isdigit()]
        external = [x for x in args.remove if not x.isdigit()]
        result = builder.remove(args.collection, case_ids=case_ids, external_ids=external)
        _print(result.to_dict())
        return 0
    if args.checkpoint is None or args.source is None:
        raise CommandError("building needs --checkpoint and --source")
    if not args.source.exists():
        raise CommandError(f"--source {args.source} does not exist")
    result = builder.build(
        args.collection,
        args.checkpoint,
        args.source,
        layout=args.layout,
        mode="add" if args.add else "full",
    )
    summary = result.to_dict()
    summary["failed"] = summary["failed"][:50]
    _print(summary)
    return 0


def _job(job: Any) -> dict[str, Any]:
    return {
        k: getattr(job, k)
        for k in (
            "id",
            "kind",
            "state",
            "progress",
            "counts",
            "message",
            "created_at",
            "finished_at",
        )
    }


def _listing(store: MetadataStore, name: str | None) -> list[dict[str, Any]]:
    out = []
    for coll in store.list_collections():
        if name and coll.name != name:
            continue
        out.append(
            {
                "collection": coll.name,
                "cases": store.count_cases(coll.id),
                "checkpoint": coll.checkpoint_sha256,
                "versions": [
                    {
                        "version": v.version,
                        "state": v.state,
                        "active": v.is_active,
                        "vectors": v.vector_count,
                        "factory": v.factory,
                        "path": v.path,
                    }
                    for v in store.list_versions(coll.id)
                ],
            }
        )
    return out
