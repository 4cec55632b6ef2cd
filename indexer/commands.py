"""``medret index``: build, extend, prune and inspect versioned indexes."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from archives.records import ArchiveError
from commandline.errors import CommandError
from dicomweb.errors import DicomwebError
from indexer.builder import IndexBuilder, IndexBuildError, IndexerConfig
from indexer.group_keys import GroupSaltError, group_salt_from_environment
from indexer.plan import ReindexMode
from indexer.sources import ArchiveSourceError, parse_source_argument
from indexer.store import MetadataStore, StoreError
from indexer.vectors.errors import VectorIndexError
from model.checkpoint import CheckpointError

EXPECTED = (
    IndexBuildError,
    StoreError,
    VectorIndexError,
    ArchiveError,
    CheckpointError,
    GroupSaltError,
    ArchiveSourceError,
    DicomwebError,
)


def database_url(data_dir: Path, url: str | None) -> str:
    return url or f"sqlite:///{(data_dir / 'medret.db').resolve()}"


def open_store(args: argparse.Namespace) -> MetadataStore:
    args.data_dir = args.data_dir.resolve()  # version paths in SQL must not depend on the cwd
    try:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create the data directory {args.data_dir}: {exc}") from exc
    if not os.access(args.data_dir, os.W_OK):
        raise CommandError(f"the data directory {args.data_dir} is not writable")
    url = database_url(args.data_dir, args.db)
    try:
        return MetadataStore.open(url)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CommandError(f"cannot open the database {_redact(url)}: {first}") from exc


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(unparseable URL)"


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


def run_follow(args: argparse.Namespace) -> int:
    """Follow a PACS into a collection until SIGTERM/SIGINT (or, with --once, until the
    feed has nothing more); :mod:`indexer.follow`."""
    from indexer.follow import FollowConfig, Follower

    try:
        source = parse_source_argument(args.source)
        if not isinstance(source, str):
            raise CommandError("--source must be a DICOMweb server, dicomweb+http(s)://…")
        store = open_store(args)
        try:
            follower = Follower(
                store,
                IndexerConfig(
                    data_dir=args.data_dir,
                    workers=args.workers,
                    device=args.device,
                    group_salt=group_salt_from_environment(),
                    progress=False,
                ),
                FollowConfig(
                    collection=args.collection,
                    source=source,
                    checkpoint=args.checkpoint,
                    labels=args.labels,
                    interval_s=max(0.05, args.interval_s),
                    batch_max=args.batch_max,
                    once=args.once,
                    full_every=args.full_every,
                ),
            )
            follower.install_signal_handlers()
            return follower.run()
        finally:
            store.close()
    except EXPECTED as exc:
        raise CommandError(str(exc)) from exc


def run_migrate(args: argparse.Namespace) -> int:
    """Bring the database schema to the newest revision (opening the store migrates it)."""
    try:
        store = open_store(args)
    except EXPECTED as exc:
        raise CommandError(str(exc)) from exc
    try:
        _print({"database": store.display_url, "revision": store.current_revision()})
    finally:
        store.close()
    return 0


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
            group_salt=group_salt_from_environment(),
            centre=args.centre,
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
        # each token may be a case id or an external id; every token must match something
        coll = store.get_collection(args.collection)
        missing = [
            token
            for token in args.remove
            if not store.find_case_ids(
                coll.id,
                external_ids=[token],
                case_ids=[int(token)] if token.isdigit() else [],
            )
        ]
        if missing:
            raise CommandError(
                f"no case in {args.collection!r} has the id or external id {missing}; "
                "nothing was removed"
            )
        case_ids = [int(x) for x in args.remove if x.isdigit()]
        result = builder.remove(
            args.collection, case_ids=case_ids, external_ids=args.remove, job_id=args.job_id
        )
        _print(result.to_dict())
        return 0
    if args.checkpoint is None or args.source is None:
        raise CommandError("building needs --checkpoint and --source")
    source = parse_source_argument(args.source)
    if args.index_factory:
        check_factory(args.index_factory)
    result = builder.build(
        args.collection,
        args.checkpoint,
        source,
        layout=args.layout,
        mode=ReindexMode.ADD if args.add else ReindexMode.FULL,
        job_id=args.job_id,
        labels=args.labels,
    )
    summary = result.to_dict()
    summary["failed"] = summary["failed"][:50]
    _print(summary)
    return 0


def check_factory(factory: str) -> None:
    """Fail before embedding anything if FAISS cannot make this index."""
    import faiss

    try:
        faiss.index_factory(64, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        raise CommandError(
            f"--index-factory {factory!r} is not a valid FAISS factory "
            "string (e.g. Flat, HNSW32,Flat, IVF1024,PQ16x8)"
        ) from None


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
