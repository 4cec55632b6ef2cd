"""Command-line arguments of ``medret index`` (no heavy imports: ``--help`` stays instant)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from commandline.types import non_negative_int, positive_int

DEFAULT_DATA_DIR = "data"


def add_location_arguments(p: argparse.ArgumentParser) -> None:
    """--data-dir and --db, shared by the commands that open the metadata store."""
    where = p.add_argument_group("where the indexes and metadata live")
    where.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MEDRET_DATA_DIR", DEFAULT_DATA_DIR)),
        help="index files and the default SQLite database (env MEDRET_DATA_DIR; default ./data)",
    )
    where.add_argument(
        "--db",
        default=os.environ.get("MEDRET_DATABASE_URL"),
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (env MEDRET_DATABASE_URL; "
        "default sqlite:///<data-dir>/medret.db)",
    )


def add_migrate_arguments(p: argparse.ArgumentParser) -> None:
    add_location_arguments(p)


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    add_location_arguments(p)
    p.add_argument("--collection", help="collection name (e.g. derm, cxr)")
    p.add_argument("--job-id", help=argparse.SUPPRESS)  # a job the service queued for this run

    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--add", action="store_true", help="embed only images whose content is not indexed yet"
    )
    action.add_argument(
        "--remove",
        nargs="+",
        metavar="ID",
        help="remove cases by case id or external id (e.g. consent withdrawn)",
    )
    action.add_argument(
        "--prune",
        action="store_true",
        help="delete the files of old, failed and abandoned versions",
    )
    action.add_argument(
        "--list", action="store_true", help="list collections, their versions and case counts"
    )
    action.add_argument(
        "--jobs",
        action="store_true",
        help="show the recent jobs of a collection (and mark dead ones failed)",
    )

    build = p.add_argument_group("building (full reindex by default, or --add)")
    build.add_argument("--checkpoint", type=Path, help="the medret checkpoint that embeds")
    build.add_argument(
        "--source",
        help="the archive: any dataset layout, a plain folder of images/DICOM files, or a "
        "PACS over DICOMweb, dicomweb+http(s)://host:port/dicom-web (QIDO-RS query keys in "
        "its query string, e.g. ?Modality=CR; credentials from MEDRET_DICOMWEB_USERNAME/"
        "PASSWORD or MEDRET_DICOMWEB_TOKEN, never in the URL)",
    )
    build.add_argument(
        "--labels",
        type=Path,
        help="a DICOMweb source's label table: a CSV with a SOPInstanceUID, SeriesInstanceUID "
        "or StudyInstanceUID column and a 'label' (or 'labels', |-separated) column; "
        "instances it does not name are indexed unlabelled",
    )
    build.add_argument(
        "--layout",
        default="auto",
        help="dataset layout (default: detect; image_folder for unlabelled files)",
    )
    build.add_argument(
        "--index-factory",
        help="a FAISS index_factory string, e.g. HNSW32,Flat "
        "or IVF4096,PQ32x8,RFlat (default: exact Flat for small archives, "
        "chosen from the size otherwise)",
    )
    build.add_argument(
        "--no-centre",
        dest="centre",
        action="store_false",
        help="a full build stores the model's cosines as they are, instead of centring the "
        'vectors on their mean (the default, docs/indexer.md "Scores"); --add and --remove '
        "keep what their base version did",
    )
    build.add_argument("--batch-size", type=positive_int, default=64)
    build.add_argument(
        "--workers", type=non_negative_int, default=2, help="decoding processes (default 2)"
    )
    build.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--keep",
        type=non_negative_int,
        default=1,
        help="--prune: ready versions to keep besides the active one (default 1)",
    )


def add_follow_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``medret follow`` (docs/indexer.md, "Following a PACS")."""
    add_location_arguments(p)
    p.add_argument("--collection", required=True, help="the collection to keep up to date")
    p.add_argument(
        "--source",
        required=True,
        help="the PACS, dicomweb+http(s)://host:port/dicom-web (QIDO-RS query keys in its "
        "query string; credentials from MEDRET_DICOMWEB_* variables)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="the medret checkpoint that embeds (default: the collection's own)",
    )
    p.add_argument("--labels", type=Path, help="a label table CSV, as for 'medret index'")
    p.add_argument(
        "--interval-s",
        type=float,
        default=1.0,
        help="seconds between reads of a feed that had nothing new (default 1.0)",
    )
    p.add_argument(
        "--batch-max",
        type=positive_int,
        default=500,
        help="most new instances in one index version (default 500)",
    )
    p.add_argument(
        "--full-every",
        type=positive_int,
        default=60,
        help="QIDO-RS polling only: list the whole source every this many polls, to find "
        "instances stored with an older study date (default 60)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="index what the feed has now, then exit (instead of following)",
    )
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=2,
        help="decoding processes for batches over 32 instances (default 2)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
