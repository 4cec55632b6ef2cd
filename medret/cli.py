"""``medret``: the command-line entry point (``medret --help``).

Each subcommand parses its own arguments and imports the package that does the work only
when it runs, so ``medret --help`` is instant. Bad input ends with a one-line reason on
stderr and exit status 2; a subcommand that is not built yet says so and exits 3.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from commandline.errors import EXIT_BAD_INPUT, CommandError
from commandline.types import positive_int

EXIT_NOT_BUILT = 3

Handler = Callable[[argparse.Namespace], int]

PLANNED: dict[str, tuple[str, str, str]] = {}


def not_built(name: str, tracked_in: str) -> Handler:
    def handler(_: argparse.Namespace) -> int:
        print(
            f"medret {name}: not built yet (tracked in {tracked_in}); nothing was done.",
            file=sys.stderr,
        )
        return EXIT_NOT_BUILT

    return handler


def package_handler(package: str, name: str) -> Handler:
    """Run ``<package>.commands.run_<name>`` (its expected failures raise CommandError)."""

    def handler(args: argparse.Namespace) -> int:
        commands = importlib.import_module(f"{package}.commands")
        result: int = getattr(commands, f"run_{name}")(args)
        return result

    return handler


def training_handler(name: str) -> Handler:
    return package_handler("training", name)


def run_demo(args: argparse.Namespace) -> int:
    from medret import demo

    return demo.run_demo(args)


def run_explain(args: argparse.Namespace) -> int:
    from medret import explain

    return explain.run_explain(args)


def run_inspect(args: argparse.Namespace) -> int:
    """Decode each file as the service would and print what it found, one JSON line each."""
    from imaging.decode import DecodeLimits, ImageDecodeError, decode_file
    from imaging.preprocessing import PreprocessConfig, preprocess

    limits = DecodeLimits(max_bytes=args.max_mb * 2**20, max_pixels=args.max_pixels)
    cfg = PreprocessConfig(image_size=(args.size, args.size))
    failures = 0
    for path in args.files:
        try:
            decoded = decode_file(path, limits)
        except (ImageDecodeError, OSError) as exc:
            failures += 1
            print(f"{path}: {exc}", file=sys.stderr)
            continue
        tensor = preprocess(decoded.pixels, cfg)
        print(
            json.dumps(
                {
                    "file": str(path),
                    "format": decoded.source_format,
                    "shape": list(decoded.pixels.shape),
                    "model_input": list(tensor.shape),
                    "metadata": dict(decoded.metadata),
                }
            )
        )
    return EXIT_BAD_INPUT if failures else 0


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``medret serve``; each overrides its MEDRET_* variable when given."""

    p.add_argument("--host", help="listen address (env MEDRET_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, help="listen port (env MEDRET_PORT; default 8000)")
    p.add_argument(
        "--data-dir", type=Path, help="index files and the default SQLite file (MEDRET_DATA_DIR)"
    )
    p.add_argument("--db", help="SQLAlchemy URL of the metadata database (MEDRET_DATABASE_URL)")
    p.add_argument(
        "--collection",
        action="append",
        dest="collections",
        metavar="NAME",
        help="serve this collection (repeatable; default: every collection with an active "
        "index, MEDRET_COLLECTIONS)",
    )
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (MEDRET_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medret",
        description=(
            "Content-based medical image retrieval: train the multi-scale ViT, index an "
            "archive of cases, and serve similar-case queries."
        ),
        epilog="Run 'medret <command> --help' for a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    for name, (summary, detail, tracked_in) in PLANNED.items():
        p = sub.add_parser(
            name, help=summary, description=f"{summary} {detail} Not built yet: {tracked_in}."
        )
        p.set_defaults(handler=not_built(name, tracked_in))

    from indexer.arguments import add_migrate_arguments
    from training.arguments import (
        add_ablate_arguments,
        add_evaluate_arguments,
        add_train_arguments,
    )

    p = sub.add_parser(
        "train",
        help="Train the multi-scale ViT with the phased dynamic multi-loss.",
        description=(
            "Train on a dataset in any supported layout (labels.csv manifest, ISIC-2018, "
            "NIH ChestX-ray14, MedMNIST .npz, class folders, DICOM with a labels CSV): three "
            "phases of cross-entropy + contrastive + triplet losses with phase-wise weights "
            "and exponentially decaying learning rate. Writes state.pt every epoch (for "
            "--resume), best.safetensors (best on the validation split), last.safetensors, "
            "metrics.jsonl and TensorBoard logs into --out. Under torchrun it trains with "
            "DistributedDataParallel."
        ),
    )
    add_train_arguments(p)
    p.set_defaults(handler=training_handler("train"))

    p = sub.add_parser(
        "evaluate",
        help="Evaluate a checkpoint: classification and retrieval metrics, report, plots.",
        description=(
            "The chosen split queries an index of the gallery split (default: test against "
            "train). Writes report.json, report.md and PNG plots (confusion matrix, ROC "
            "curves, per-class precision/recall/F1) into --out."
        ),
    )
    add_evaluate_arguments(p)
    p.set_defaults(handler=training_handler("evaluate"))

    p = sub.add_parser(
        "ablate",
        help="Train and evaluate the paper's ablation variants and a CNN baseline.",
        description=(
            "Plain ViT (single-scale, cross-entropy only), ViT + multi-scale, ViT + "
            "multi-loss, the full model and a ResNet-18-style CNN, all with the same "
            "config, data, budget and seed; writes ablation.md and ablation.json into --out. "
            "Re-running continues unfinished variants."
        ),
    )
    add_ablate_arguments(p)
    p.set_defaults(handler=training_handler("ablate"))

    p = sub.add_parser(
        "serve",
        help="Serve the query API and the viewer page.",
        description=(
            "Start the HTTP service: the viewer page at /, POST /query, GET /cases/{id}, "
            "/healthz, /readyz, /metrics, OpenAPI docs at /docs, and the /admin API when "
            "MEDRET_ADMIN_TOKEN is set. Every setting is read from MEDRET_* environment "
            "variables (see the README); the options below override them."
        ),
    )
    add_serve_arguments(p)
    p.set_defaults(handler=package_handler("app", "serve"))

    p = sub.add_parser(
        "migrate",
        help="Create or upgrade the metadata database schema (Alembic), then exit.",
        description=(
            "Apply the Alembic migrations to the database named by --db or "
            "MEDRET_DATABASE_URL (default sqlite:///<data-dir>/medret.db). Safe to run "
            "repeatedly and from several replicas; deployments run it before serving."
        ),
    )
    add_migrate_arguments(p)
    p.set_defaults(handler=package_handler("indexer", "migrate"))

    from indexer.arguments import add_index_arguments

    p = sub.add_parser(
        "index",
        help="Embed an archive into a versioned FAISS index with case metadata in SQL.",
        description=(
            "Full reindex (default), --add only new images (by content hash), --remove cases, "
            "--prune old versions, --list collections, --jobs. A build writes a complete new "
            "version and makes it active in one transaction; a failed or killed build leaves "
            "the previous version active. Prints a JSON summary, including unreadable files."
        ),
    )
    add_index_arguments(p)
    p.set_defaults(handler=package_handler("indexer", "index"))

    from indexer.arguments import add_follow_arguments

    p = sub.add_parser(
        "follow",
        help="Keep a collection up to date with a PACS: index new instances as they arrive.",
        description=(
            "Feed: Orthanc's /changes (when the server is an Orthanc), else QIDO-RS polling "
            "by StudyDate with a full listing every --full-every polls. The first start "
            "indexes everything not yet indexed. Cursor: stored in SQL per collection and "
            "source, only after the version with the new instances is active, so a killed "
            "follower resumes with no instance missed or indexed twice. Batching: new "
            "instances gathered until the feed has nothing more or --batch-max, then one "
            "version. Delay from the PACS storing an image to it being searchable: up to "
            "--interval-s, plus the batch's retrieval, embedding and version build, plus "
            "the service's MEDRET_RELOAD_INTERVAL_S. SIGTERM/SIGINT end it after the "
            "current batch (exit 0)."
        ),
    )
    add_follow_arguments(p)
    p.set_defaults(handler=package_handler("indexer", "follow"))

    from medret.demo import add_demo_arguments

    p = sub.add_parser(
        "demo",
        help="Build a demo collection and serve it.",
        description=(
            "With no data and no internet: generate a small labelled synthetic image set "
            "(six classes that differ at different scales), train the CPU recipe on it, "
            "index it into a collection and serve it, printing the viewer's URL. --data "
            "uses a real dataset in any supported layout instead. Files go under "
            "<data-dir>/demo; a second run reuses the data, model and index it finds there "
            "(--fresh rebuilds them)."
        ),
    )
    add_demo_arguments(p)
    p.set_defaults(handler=run_demo)

    from medret.explain import add_explain_arguments

    p = sub.add_parser(
        "explain",
        help="Write a PNG sheet of why a query's nearest cases are near (for reports).",
        description=(
            "Decode --image as the service does, search --collection's active index with "
            "--checkpoint (the one the collection was indexed with) and write to --out a PNG "
            "sheet: the query with the map of what drives its predicted class, then for each "
            "of the --top-k nearest cases its image, the case's similarity map and the "
            "query's map for that case, with rank, score and label. Maps: integrated gradients "
            "on the tokens of every scale, on the finest patch grid (docs/service.md). Prints a "
            "JSON summary."
        ),
    )
    add_explain_arguments(p)
    p.set_defaults(handler=run_explain)

    p = sub.add_parser(
        "inspect",
        help="Decode image or DICOM files and show what the model would receive.",
        description=(
            "Decode each file exactly as training, indexing and the service do (format "
            "recognised by content; DICOM windowed and converted), and print its format, "
            "pixel shape, model-input shape and non-identifying metadata as JSON lines. "
            "Exits 2 if any file cannot be decoded."
        ),
    )
    p.add_argument("files", nargs="+", type=Path, help="image or DICOM files")
    p.add_argument("--size", type=positive_int, default=224, help="model input side (default 224)")
    p.add_argument("--max-mb", type=positive_int, default=512, help="largest file accepted, MiB")
    p.add_argument(
        "--max-pixels", type=positive_int, default=100_000_000, help="largest decoded frame, pixels"
    )
    p.set_defaults(handler=run_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # libraries' start-up chatter is not for the person at the terminal
        for noisy in ("faiss", "alembic", "PIL", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    # pydicom's value warnings quote raw element values, which may be patient identifiers
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"medret {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, OSError) as exc:  # bad input that a library reported
        logging.getLogger("medret").debug("details", exc_info=True)
        hint = "" if args.verbose else " (run with -v for details)"
        print(f"medret {args.command}: {exc}{hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"medret {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
