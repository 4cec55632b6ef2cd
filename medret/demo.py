"""``medret demo``: build a demo collection on this machine, then serve it.

Four steps, each announced on one line and each skipped when a previous run already did
it (``--fresh`` redoes them all):

1. **data** — the synthetic set of :mod:`medret.demo_data`, generated into
   ``<data-dir>/demo/dataset`` unless a complete one with the same parameters is there;
   or a real dataset in any supported layout (``--data PATH``), read where it lies.
2. **model** — :mod:`medret.demo_model`: the CPU recipe (``configs/cpu_recipe.yaml``) for
   the synthetic set; for ``--data`` the quality recipe (``configs/quality_cpu.yaml``: an
   EfficientNet-Lite0 teacher, then the hybrid multi-scale ViT started and distilled from
   it), serving the ViT (``--stage teacher`` serves the teacher); ``--config`` takes either
   kind of file and ``--epochs`` changes the length of every phase. Trained into
   ``<data-dir>/demo/run`` (``run-<name>`` for ``--data``), reused when the data and
   configs are unchanged, resumed when interrupted.
3. **index** — a full build of the collection (``demo``, or ``--collection``) with the
   indexer's own builder, skipped when the collection's active version was built with
   this checkpoint's SHA-256. Its salt of the hashed patient/lesion keys is
   ``MEDRET_GROUP_SALT`` when set, else the demo's own: made on the first run and kept in
   ``<data-dir>/demo/group-salt`` (readable by its owner only), reused by later runs.
4. **serve** — ``medret serve`` for that collection (``app`` is started by name: nothing
   here imports it), printing the viewer's URL; ``--no-serve`` stops after step 3.

Expected failures (a missing ``--data``, an unreadable dataset, a database that cannot be
opened) raise :class:`CommandError`, which the CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commandline.errors import CommandError
from commandline.types import positive_int
from medret.demo_model import prepare_model, run_folder
from medret.demo_parts import DemoData, duration, say
from medret.demo_salt import GROUP_SALT_FILE, demo_group_salt

if TYPE_CHECKING:
    from archives.records import Archive
    from indexer.store import MetadataStore

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "demo"
DEFAULT_IMAGES_PER_CLASS = 150


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    from indexer.arguments import add_location_arguments

    add_location_arguments(p)
    data = p.add_argument_group("what to build")
    data.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="a real dataset in any supported layout (labels.csv manifest, ISIC-2018, "
        "ChestX-ray14, MedMNIST .npz, class folders) instead of the synthetic set",
    )
    data.add_argument("--layout", default="auto", help="layout of --data (default: detect)")
    data.add_argument(
        "--collection",
        default=DEFAULT_COLLECTION,
        help=f"collection to index into and serve (default {DEFAULT_COLLECTION})",
    )
    data.add_argument(
        "--images-per-class",
        type=positive_int,
        default=DEFAULT_IMAGES_PER_CLASS,
        help=f"size of the synthetic set: images per class, 6 classes (default "
        f"{DEFAULT_IMAGES_PER_CLASS}; at least 8)",
    )
    data.add_argument(
        "--config",
        type=Path,
        help="training config or recipe of stages (default: configs/cpu_recipe.yaml of the "
        "checkout for the synthetic set, minutes; configs/quality_cpu.yaml for --data: an "
        "EfficientNet-Lite0 teacher from ImageNet weights, then the hybrid multi-scale ViT "
        "started and distilled from it, about 30 min for 3,600 training images on 2 cores)",
    )
    data.add_argument(
        "--stage",
        metavar="NAME",
        help="which stage of a recipe to index and serve (default: the recipe's own choice; "
        "the quality recipe serves its ViT student, --stage teacher its EfficientNet-Lite0)",
    )
    data.add_argument(
        "--epochs",
        type=positive_int,
        help="training epochs per phase of every stage (default: the config's; the CPU "
        "recipe has 3 × 8)",
    )
    data.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    data.add_argument(
        "--fresh", action="store_true", help="rebuild the data, model and index even if present"
    )
    serve = p.add_argument_group("serving")
    serve.add_argument("--host", help="listen address (env MEDRET_HOST; default 127.0.0.1)")
    serve.add_argument(
        "--port", type=positive_int, help="listen port (env MEDRET_PORT; default 8000)"
    )
    serve.add_argument(
        "--no-serve", action="store_true", help="build (or check) the demo, then exit"
    )


# --------------------------------------------------------------------------- steps


def prepare_data(args: argparse.Namespace, demo_dir: Path) -> DemoData:
    """Step 1: the dataset to train on and index (generated, reused or given)."""
    from archives.registry import read_archive

    if args.data is not None:
        path = Path(args.data).expanduser()
        if not path.exists():
            raise CommandError(f"--data {path} does not exist")
        archive = read_archive(path, args.layout)
        say(1, f"data: {describe(archive)}")
        return DemoData(path, archive.layout, archive, dataset_fingerprint(archive), False)

    from medret import demo_data

    try:
        spec = demo_data.DemoDataSpec(images_per_class=args.images_per_class)
    except ValueError as exc:
        raise CommandError(f"--images-per-class: {exc}") from None
    path = demo_dir / "dataset"
    if not args.fresh and demo_data.is_complete(path, spec):
        archive = read_archive(path, "manifest")
        say(1, f"data: reusing the synthetic set: {describe(archive)}")
    else:
        total = spec.images_per_class * len(demo_data.CLASSES)
        say(1, f"data: generating {total:,} synthetic images into {path}")
        from tqdm import tqdm

        with tqdm(total=total, desc="generating", unit="img") as bar:
            demo_data.generate(path, spec, on_progress=lambda done, _: bar.update(1))
        archive = read_archive(path, "manifest")
        say(1, f"data: {describe(archive)}")
    return DemoData(path, "manifest", archive, dataset_fingerprint(archive), True)


def describe(archive: Archive) -> str:
    counts = {split: len(archive.split(split)) for split in ("train", "val", "test")}
    splits = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    return (
        f"{archive.root} ({archive.layout}), {len(archive.samples):,} images, "
        f"{len(archive.codes)} classes: {', '.join(archive.codes)} ({splits})"
    )


def dataset_fingerprint(archive: Archive) -> str:
    """SHA-256 over every sample's key, labels, split and file size/mtime (not the pixels)."""
    digest = hashlib.sha256(f"{archive.layout}\n{archive.task.value}\n".encode())
    for sample in sorted(archive.samples, key=lambda s: s.key):
        source = Path(sample.path or (sample.array.file if sample.array else archive.root))
        stat = source.stat()
        line = [sample.key, "|".join(sample.labels), sample.split, stat.st_size, stat.st_mtime_ns]
        digest.update(json.dumps(line).encode())
    return digest.hexdigest()


def prepare_index(
    args: argparse.Namespace, data: DemoData, checkpoint: Path, store: MetadataStore, salt: str
) -> None:
    """Step 3: the collection's active version, built with ``checkpoint`` (reused if so)."""
    from indexer.builder import IndexBuilder, IndexerConfig
    from indexer.store import StoreError
    from model.checkpoint import file_sha256, read_checkpoint_meta

    name = args.collection
    sha = file_sha256(checkpoint)
    try:
        collection = store.get_collection(name)
    except StoreError:
        collection = None
    active = store.active_version(collection.id) if collection else None
    if not args.fresh and active is not None and active.checkpoint_sha256 == sha:
        say(
            3,
            f"index: reusing collection {name!r} version {active.version} "
            f"({active.vector_count:,} cases, built with this model)",
        )
        return
    meta = read_checkpoint_meta(checkpoint)
    if collection is not None and (
        collection.task != meta.model.task.value
        or tuple(collection.label_codes) != tuple(meta.labels.codes)
    ):
        # a full build adopts the new checkpoint but not a new label list: record it first
        store.ensure_collection(
            name,
            checkpoint_sha256=sha,
            checkpoint_path=str(checkpoint),
            task=meta.model.task.value,
            label_codes=list(meta.labels.codes),
            label_names=list(meta.labels.names),
        )
    say(3, f"index: embedding {len(data.archive.samples):,} images into collection {name!r}")
    builder = IndexBuilder(
        store,
        IndexerConfig(data_dir=args.data_dir, group_salt=salt, device=args.device),
    )
    result = builder.build(name, checkpoint, data.path, layout=data.layout, mode="full")
    failed = f", {len(result.failed)} unreadable" if result.failed else ""
    say(
        3,
        f"index: collection {name!r} version {result.version} is active with "
        f"{result.vector_count:,} cases{failed} ({duration(result.seconds)})",
    )


def serve(args: argparse.Namespace, salt: str) -> int:
    """Step 4: start the service for the demo collection (``app`` imported by name)."""
    from pydantic import ValidationError

    app_settings = importlib.import_module("app.settings")
    app_commands = importlib.import_module("app.commands")
    overrides: dict[str, Any] = {
        "data_dir": args.data_dir,
        "database_url": args.db,
        "host": args.host,
        "port": args.port,
        "collections": [args.collection],
        "default_collection": args.collection,
        "group_salt": salt,  # /admin/reindex (with MEDRET_ADMIN_TOKEN) hashes as step 3 did
    }
    try:
        settings = app_settings.load_settings(
            **{k: v for k, v in overrides.items() if v is not None}
        )
    except ValidationError as exc:
        raise CommandError(app_commands.describe_settings_error(exc)) from None
    say(4, f"serve: starting the service for collection {args.collection!r}")

    def announce(url: str) -> None:
        say(4, f"serve: the viewer is at {url} (API docs at {url}docs; Ctrl-C stops)")

    result: int = app_commands.serve(settings, on_started=announce)
    return result


# --------------------------------------------------------------------------- entry point


def run_demo(args: argparse.Namespace) -> int:
    from archives.records import ArchiveError
    from indexer import commands as index_commands
    from indexer.builder import IndexBuildError
    from indexer.store import StoreError
    from indexer.vectors.errors import VectorIndexError
    from model.checkpoint import CheckpointError
    from training.config import TrainConfigError
    from training.errors import TrainingError

    expected = (
        ArchiveError,
        TrainConfigError,
        TrainingError,
        CheckpointError,
        IndexBuildError,
        StoreError,
        VectorIndexError,
        CommandError,
    )
    started = time.perf_counter()
    args.data_dir = args.data_dir.expanduser().resolve()
    demo_dir = args.data_dir / "demo"
    try:
        data = prepare_data(args, demo_dir)  # first: a bad --data fails at once
        salt = demo_group_salt(demo_dir)
        store = index_commands.open_store(args)  # before training: a bad --db fails early
        try:
            checkpoint = prepare_model(args, data, run_folder(demo_dir, data))
            prepare_index(args, data, checkpoint, store, salt)
        finally:
            store.close()
    except expected as exc:
        raise CommandError(str(exc)) from exc
    print(
        f"medret demo: collection {args.collection!r} ready in "
        f"{duration(time.perf_counter() - started)} (data directory {args.data_dir})",
        flush=True,
    )
    if args.no_serve:
        db = " --db <the same URL>" if args.db else ""
        own_salt = demo_dir / GROUP_SALT_FILE
        salt_note = (
            ""
            if os.environ.get("MEDRET_GROUP_SALT")
            else f" (its /admin/reindex needs MEDRET_GROUP_SALT=$(cat {own_salt}))"
        )
        say(
            4,
            f"serve: skipped (--no-serve); start it with: medret serve --data-dir "
            f"{args.data_dir}{db} --collection {args.collection}{salt_note}",
        )
        return 0
    return serve(args, salt)
