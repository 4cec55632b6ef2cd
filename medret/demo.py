"""``medret demo``: build a demo collection on this machine, then serve it.

Four steps, each announced on one line and each skipped when a previous run already did
it (``--fresh`` redoes them all):

1. **data** — the synthetic set of :mod:`medret.demo_data`, generated into
   ``<data-dir>/demo/dataset`` unless a complete one with the same parameters is there;
   or a real dataset in any supported layout (``--data PATH``), read where it lies.
2. **model** — the CPU recipe (``configs/cpu_recipe.yaml``, or ``--config``; ``--epochs``
   changes the length of its phases) trained into ``<data-dir>/demo/run`` (``run-<name>`` for
   ``--data``). The run folder's ``demo-run.json`` records the dataset's fingerprint
   (every sample's key, labels, split, file size and mtime), the resolved config (minus
   where-it-runs keys) and, once training finished, the SHA-256 of ``best.safetensors``.
   All three match: the model is reused. Same data and config but no SHA-256 yet (an
   interrupted run): training resumes. Anything else: the folder is cleared and the
   model trained again.
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
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commandline.errors import CommandError
from commandline.types import positive_int
from files.atomic import atomic_write_text
from medret.demo_salt import GROUP_SALT_FILE, demo_group_salt

if TYPE_CHECKING:
    from archives.records import Archive
    from indexer.store import MetadataStore
    from training.config import TrainConfig

log = logging.getLogger(__name__)

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "cpu_recipe.yaml"
DEFAULT_COLLECTION = "demo"
DEFAULT_IMAGES_PER_CLASS = 150
RUN_MARKER = "demo-run.json"
STEPS = 4

# Throughput of the CPU recipe per CPU core (tiny ViT, 96 px), measured on the development
# machines; only used to tell the person roughly how long training a real dataset takes.
TRAIN_IMAGES_PER_S_PER_CORE = 90.0
EMBED_IMAGES_PER_S_PER_CORE = 300.0
DECODE_IMAGES_PER_S_PER_CORE = 150.0


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
        default=RECIPE,
        help="training config (default: the CPU recipe, configs/cpu_recipe.yaml of the checkout)",
    )
    data.add_argument(
        "--epochs",
        type=positive_int,
        help="training epochs per phase (default: the config's; the CPU recipe has 3 × 8)",
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


def _say(step: int, message: str) -> None:
    print(f"medret demo [{step}/{STEPS}] {message}", flush=True)


@dataclass(frozen=True)
class DemoData:
    path: Path
    layout: str
    archive: Archive
    fingerprint: str
    synthetic: bool


def prepare_data(args: argparse.Namespace, demo_dir: Path) -> DemoData:
    """Step 1: the dataset to train on and index (generated, reused or given)."""
    from archives.registry import read_archive

    if args.data is not None:
        path = Path(args.data).expanduser()
        if not path.exists():
            raise CommandError(f"--data {path} does not exist")
        archive = read_archive(path, args.layout)
        _say(1, f"data: {describe(archive)}")
        return DemoData(path, archive.layout, archive, dataset_fingerprint(archive), False)

    from medret import demo_data

    try:
        spec = demo_data.DemoDataSpec(images_per_class=args.images_per_class)
    except ValueError as exc:
        raise CommandError(f"--images-per-class: {exc}") from None
    path = demo_dir / "dataset"
    if not args.fresh and demo_data.is_complete(path, spec):
        archive = read_archive(path, "manifest")
        _say(1, f"data: reusing the synthetic set: {describe(archive)}")
    else:
        total = spec.images_per_class * len(demo_data.CLASSES)
        _say(1, f"data: generating {total:,} synthetic images into {path}")
        from tqdm import tqdm

        with tqdm(total=total, desc="generating", unit="img") as bar:
            demo_data.generate(path, spec, on_progress=lambda done, _: bar.update(1))
        archive = read_archive(path, "manifest")
        _say(1, f"data: {describe(archive)}")
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


def training_config(args: argparse.Namespace, data: DemoData, run_dir: Path) -> TrainConfig:
    """The CPU recipe pointed at the demo's data, run folder and pixel cache."""
    from training.config import load_config

    if not args.config.is_file():
        raise CommandError(
            f"no training config at {args.config} (the default is configs/cpu_recipe.yaml of "
            "the checkout, which an installed wheel lacks: give one with --config)"
        )
    cfg = load_config(
        args.config,
        ["tensorboard=false"],
        strings={
            "data.path": str(data.path),
            "data.layout": data.layout,
            "data.cache_dir": str(run_dir.parent / "cache"),
            "out_dir": str(run_dir),
            "device": args.device,
        },
    )
    return cfg.with_epochs_per_phase(args.epochs) if args.epochs else cfg


def run_folder(demo_dir: Path, data: DemoData) -> Path:
    if data.synthetic:
        return demo_dir / "run"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", data.path.resolve().name).strip("-.") or "data"
    return demo_dir / f"run-{name}"


def prepare_model(args: argparse.Namespace, data: DemoData, demo_dir: Path) -> Path:
    """Step 2: a trained checkpoint for ``data``: reused, resumed or trained now."""
    from model.checkpoint import file_sha256
    from training.loop import BEST_FILE, train
    from training.state import STATE_FILE, comparable_config

    run_dir = run_folder(demo_dir, data)
    cfg = training_config(args, data, run_dir)
    wanted = {"dataset": data.fingerprint, "config": comparable_config(cfg.to_dict())}
    marker = _read_json(run_dir / RUN_MARKER) or {}
    same_run = not args.fresh and {k: marker.get(k) for k in wanted} == _as_json(wanted)
    best = run_dir / BEST_FILE
    trained_sha = marker.get("checkpoint_sha256")
    if same_run and trained_sha and best.is_file() and file_sha256(best) == trained_sha:
        _say(2, f"model: reusing {best} (trained on this data with this config)")
        return best
    resume = same_run and (run_dir / STATE_FILE).is_file()
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / RUN_MARKER, wanted | {"checkpoint_sha256": None})
    train_count = len(data.archive.split("train"))
    what = "resuming" if resume else "training"
    _say(
        2,
        f"model: {what} {recipe_name(args.config)} ({len(cfg.phases)} phases × "
        f"{cfg.phases[0].epochs} epochs, {train_count:,} training images) into {run_dir}"
        + ("" if data.synthetic else f"; {estimate(cfg, data.archive)}"),
    )
    started = time.perf_counter()
    result = train(cfg, resume=resume)
    if result.best_path is None:
        raise CommandError(f"training in {run_dir} produced no best model")
    _write_json(run_dir / RUN_MARKER, wanted | {"checkpoint_sha256": file_sha256(result.best_path)})
    metric = result.history[-1]["selection"]["metric"] if result.history else "score"
    _say(
        2,
        f"model: {result.best_path} (validation {metric} {result.best_score:.3f} at epoch "
        f"{result.best_epoch} of {result.epochs_run}), trained in "
        f"{_duration(time.perf_counter() - started)}",
    )
    return result.best_path


def recipe_name(config: Path) -> str:
    return "the CPU recipe" if config == RECIPE else str(config)


def estimate(cfg: TrainConfig, archive: Archive) -> str:
    """A rough training time on this machine's CPU (the recipe's measured throughput)."""
    if cfg.device not in ("auto", "cpu"):
        return f"on {cfg.device} this takes minutes"
    import torch

    if cfg.device == "auto" and torch.cuda.is_available():
        return "on the GPU this takes minutes"
    cores = max(1, torch.get_num_threads())
    n_train = len(archive.split("train"))
    n_val = len(archive.split("val"))
    per_epoch = n_train / (TRAIN_IMAGES_PER_S_PER_CORE * cores) + (n_train + n_val) / (
        EMBED_IMAGES_PER_S_PER_CORE * cores
    )
    decode = (n_train + n_val) / (DECODE_IMAGES_PER_S_PER_CORE * cores)
    seconds = cfg.total_epochs * per_epoch + decode
    return f"about {_duration(seconds)} on {cores} CPU core{'s' if cores > 1 else ''}"


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
        _say(
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
    _say(3, f"index: embedding {len(data.archive.samples):,} images into collection {name!r}")
    builder = IndexBuilder(
        store,
        IndexerConfig(data_dir=args.data_dir, group_salt=salt, device=args.device),
    )
    result = builder.build(name, checkpoint, data.path, layout=data.layout, mode="full")
    failed = f", {len(result.failed)} unreadable" if result.failed else ""
    _say(
        3,
        f"index: collection {name!r} version {result.version} is active with "
        f"{result.vector_count:,} cases{failed} ({_duration(result.seconds)})",
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
    _say(4, f"serve: starting the service for collection {args.collection!r}")

    def announce(url: str) -> None:
        _say(4, f"serve: the viewer is at {url} (API docs at {url}docs; Ctrl-C stops)")

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
            checkpoint = prepare_model(args, data, demo_dir)
            prepare_index(args, data, checkpoint, store, salt)
        finally:
            store.close()
    except expected as exc:
        raise CommandError(str(exc)) from exc
    print(
        f"medret demo: collection {args.collection!r} ready in "
        f"{_duration(time.perf_counter() - started)} (data directory {args.data_dir})",
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
        _say(
            4,
            f"serve: skipped (--no-serve); start it with: medret serve --data-dir "
            f"{args.data_dir}{db} --collection {args.collection}{salt_note}",
        )
        return 0
    return serve(args, salt)


# --------------------------------------------------------------------------- small parts


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 90:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes / 60:.1f} h"


def _as_json(data: dict[str, Any]) -> Any:
    """``data`` as it reads back from a JSON file (tuples become lists)."""
    return json.loads(json.dumps(data))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
