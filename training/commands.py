"""``medret train``, ``medret evaluate`` and ``medret ablate``: arguments and handlers.

The handlers turn every expected failure (a bad config, an unreadable dataset, a
checkpoint that does not fit the data) into :class:`CommandError`, which the CLI prints
as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from archives.records import ArchiveError
from archives.registry import read_archive
from commandline.errors import CommandError
from labels import Task
from model.checkpoint import CheckpointError, load_checkpoint
from model.pretrained import PretrainedWeightsError
from training.arguments import VARIANTS
from training.config import PhaseConfig, TrainConfig, TrainConfigError, load_config
from training.data import prepare_data
from training.distributed import DistEnv, resolve_device
from training.errors import TrainingError
from training.evaluation import evaluate_split
from training.loop import Trainer, TrainResult, train
from training.recipe import StageRun, is_recipe, load_recipe, stage_runs, train_stages
from training.report import headline, write_report
from training.state import STATE_FILE

log = logging.getLogger(__name__)

EXPECTED_ERRORS = (
    TrainConfigError,
    TrainingError,
    ArchiveError,
    CheckpointError,
    PretrainedWeightsError,
)


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    strings = {}
    if args.data:
        strings["data.path"] = args.data
    if args.out:
        strings["out_dir"] = args.out
    if getattr(args, "device", None):
        strings["device"] = args.device
    cfg = load_config(args.config, list(args.set or []), strings=strings)
    if getattr(args, "epochs_per_phase", None) is not None:
        cfg = cfg.with_epochs_per_phase(args.epochs_per_phase)
    return cfg


def run_train(args: argparse.Namespace) -> int:
    try:
        if is_recipe(args.config):
            return _train_recipe(args)
        cfg = _config_from_args(args)
        result = train(cfg, resume=args.resume)
    except EXPECTED_ERRORS as exc:
        raise CommandError(str(exc)) from exc
    if result.best_path is not None:
        print(
            f"best checkpoint: {result.best_path} (validation {result.best_score:.4f} "
            f"at epoch {result.best_epoch} of {result.epochs_run})"
        )
    return 0


def _train_recipe(args: argparse.Namespace) -> int:
    """Every stage of a recipe in order (training/recipe.py), each into ``--out/<stage>``."""
    recipe = load_recipe(args.config)
    strings = {"data.path": args.data} if args.data else {}
    if getattr(args, "device", None):
        strings["device"] = args.device
    runs = stage_runs(
        recipe,
        args.out or "runs/recipe",
        list(args.set or []),
        strings,
        getattr(args, "epochs_per_phase", None),
    )

    def train_one(run: StageRun, number: int) -> TrainResult:
        resume = args.resume and (Path(run.config.out_dir) / STATE_FILE).is_file()
        print(
            f"stage {number}/{len(runs)}: {run.stage.name} ({run.stage.config.name}) into "
            f"{run.config.out_dir}",
            flush=True,
        )
        result = train(run.config, resume=resume)
        if result.best_path is not None:
            print(
                f"best checkpoint of {run.stage.name}: {result.best_path} (validation "
                f"{result.best_score:.4f} at epoch {result.best_epoch} of {result.epochs_run})",
                flush=True,
            )
        return result

    train_stages(runs, train_one)
    served = next(r for r in runs if r.stage.name == recipe.serve)
    print(f"the recipe serves {recipe.serve}: {served.best_path}")
    return 0


def evaluate_checkpoint(
    checkpoint: Path,
    data: str,
    out: Path,
    *,
    layout: str = "auto",
    split: str = "test",
    gallery: str = "train",
    cache_dir: str = "runs/cache",
    device_spec: str = "auto",
    batch_size: int = 128,
    workers: int = 2,
    title: str | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on a dataset split; writes the report, returns it."""
    device = resolve_device(device_spec, DistEnv())
    loaded = load_checkpoint(checkpoint, device)
    # carve splits exactly as the training run did, so its validation images stay apart
    trained_on = loaded.meta.training.get("config", {}).get("data", {})
    archive = read_archive(data, layout, val_fraction=float(trained_on.get("val_fraction", 0.1)))
    codes = loaded.meta.labels.codes
    if tuple(archive.codes) != tuple(codes):
        raise CommandError(
            f"the checkpoint's classes {list(codes)} differ from the dataset's "
            f"{list(archive.codes)}"
        )
    if archive.task is not loaded.meta.model.task:
        raise CommandError(
            f"the checkpoint is {loaded.meta.model.task.value}, the dataset is {archive.task.value}"
        )
    prepared = prepare_data(
        archive,
        loaded.meta.preprocessing.image_size,
        cache_dir,
        splits=tuple(dict.fromkeys((split, gallery))),
        workers=workers,
    )
    for name in (split, gallery):
        if not len(prepared.splits[name].samples):
            raise CommandError(f"the {name!r} split of {data} has no usable labelled images")
    report, _ = evaluate_split(
        loaded.model,
        prepared,
        split,
        gallery,
        loaded.meta.model.task,
        loaded.meta.preprocessing,
        device,
        batch_size=batch_size,
    )
    report["checkpoint"] = {"path": str(checkpoint), "sha256": loaded.sha256}
    report["dataset"] = {
        "root": str(archive.root),
        "layout": archive.layout,
        "query_split": split,
        "gallery_split": gallery,
    }
    write_report(report, out, title=title or f"{checkpoint.name} on {split}")
    return report


def run_evaluate(args: argparse.Namespace) -> int:
    try:
        report = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            args.out,
            layout=args.layout,
            split=args.split,
            gallery=args.gallery,
            cache_dir=args.cache_dir,
            device_spec=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
        )
    except EXPECTED_ERRORS as exc:
        raise CommandError(str(exc)) from exc
    print(json.dumps(headline(report), indent=2))
    print(f"report: {args.out / 'report.md'}")
    return 0


# ------------------------------------------------------------------------------ ablation

VARIANT_TITLES = {
    "vit": "ViT (single-scale, cross-entropy)",
    "vit_multiscale": "ViT + multi-scale",
    "vit_multiloss": "ViT + multi-loss",
    "full": "full (multi-scale + multi-loss)",
    "cnn": "CNN baseline (ResNet-18 style, multi-loss)",
}


def ablation_config(base: TrainConfig, variant: str, out_root: Path) -> TrainConfig:
    """The base config with one of the paper's ablation switches set."""
    ce_only = tuple(PhaseConfig(epochs=p.epochs, ce=1.0, lr_decay=p.lr_decay) for p in base.phases)
    model = base.model
    phases = base.phases
    if variant in ("vit", "vit_multiscale"):
        phases = ce_only
    if variant in ("vit", "vit_multiloss"):
        model = dataclasses.replace(model, multiscale=False)
    if variant == "cnn":
        model = dataclasses.replace(model, architecture="cnn")
    return dataclasses.replace(base, model=model, phases=phases, out_dir=str(out_root / variant))


def ablation_table(rows: dict[str, dict[str, float]], task: Task) -> str:
    cols = (
        ["mean_auroc", "mAP_macro", "P@10_macro", "macro_f1"]
        if task is Task.MULTI_LABEL
        else ["macro_f1", "balanced_accuracy", "macro_auc", "mAP_macro", "P@10_macro"]
    )
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for variant, head in rows.items():
        cells = []
        for col in cols:
            value = head.get(col)
            cells.append("–" if value is None else f"{100 * value:.2f}")
        lines.append(f"| {VARIANT_TITLES.get(variant, variant)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_ablate(args: argparse.Namespace) -> int:
    try:
        base = _config_from_args(args)
        out_root = Path(base.out_dir)
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            raise CommandError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
        archive = read_archive(
            base.data.path, base.data.layout, val_fraction=base.data.val_fraction
        )
        if not any(s.labelled for s in archive.split(args.split)):
            raise CommandError(
                f"the {args.split!r} split of {base.data.path} has no labelled images to "
                "report on; choose another --split"
            )
        rows: dict[str, dict[str, float]] = {}
        task = Task.SINGLE_LABEL
        for variant in variants:
            cfg = ablation_config(base, variant, out_root)
            state = Path(cfg.out_dir) / STATE_FILE
            trainer = Trainer(cfg)
            task = trainer.task
            resume = state.exists()
            result = trainer.run(resume=resume)
            if result.best_path is None:
                raise CommandError(f"{variant}: training produced no best model")
            if cfg.model.architecture == "cnn":
                trainer.net.load_state_dict(torch.load(result.best_path, weights_only=True))
            else:
                trainer.net.load_state_dict(load_checkpoint(result.best_path).model.state_dict())
            test = prepare_data(
                trainer.data.archive,
                trainer.pre.image_size,
                cfg.data.cache_dir,
                splits=tuple(dict.fromkeys((args.split, "train"))),
                workers=cfg.data.workers,
                env=trainer.env,
            )
            report, _ = evaluate_split(
                trainer.net,
                test,
                args.split,
                "train",
                trainer.task,
                trainer.pre,
                trainer.device,
                batch_size=cfg.eval_batch_size,
                bf16=cfg.bf16,
            )
            write_report(
                report,
                Path(cfg.out_dir) / f"report_{args.split}",
                title=f"{VARIANT_TITLES[variant]} on {args.split}",
            )
            rows[variant] = headline(report) | {"best_epoch": float(result.best_epoch)}
            log.info("%s: %s", variant, rows[variant])
        table = ablation_table(rows, task)
        (out_root / "ablation.md").write_text(f"# Ablation on the {args.split} split\n\n{table}\n")
        (out_root / "ablation.json").write_text(json.dumps(rows, indent=2))
    except EXPECTED_ERRORS as exc:
        raise CommandError(str(exc)) from exc
    print(table)
    return 0
