"""Command-line arguments of ``medret train``, ``evaluate`` and ``ablate``.

Kept apart from the handlers (:mod:`training.commands`) so that building the parser
imports nothing heavy and ``medret --help`` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from commandline.types import non_negative_int, positive_int

VARIANTS = ("vit", "vit_multiscale", "vit_multiloss", "full", "cnn")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="YAML config of one run (e.g. configs/cpu_recipe.yaml), or a recipe of stages "
        "run in order (configs/quality_cpu.yaml: a teacher, then a student distilled from "
        "it, each into --out/<stage>)",
    )
    p.add_argument("--data", help="dataset folder (any supported layout); sets data.path")
    p.add_argument("--out", help="run folder for checkpoints and metrics; sets out_dir")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--epochs-per-phase", type=positive_int, help="shorten or lengthen every phase")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set model.depth=4 --set batch_size=64",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a medret checkpoint")
    p.add_argument("--data", required=True, help="dataset folder (any supported layout)")
    p.add_argument("--layout", default="auto", help="dataset layout (default: detect)")
    p.add_argument("--split", default="test", help="the split that queries (default test)")
    p.add_argument("--gallery", default="train", help="the split that is searched")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--cache-dir", default="runs/cache", help="decoded-pixel cache")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--workers", type=non_negative_int, default=2)


def add_ablate_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p)
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {','.join(VARIANTS)}",
    )
    p.add_argument("--split", default="test", help="the split the table reports (default test)")
