"""Step 2 of ``medret demo``: the model to index and serve, reused, resumed or trained now.

The synthetic set trains the CPU recipe (``configs/cpu_recipe.yaml``: one run, minutes).
A real dataset (``--data``) trains the quality recipe (``configs/quality_cpu.yaml``): the
EfficientNet-Lite0 teacher fine-tuned from its ImageNet weights, then the hybrid
multi-scale ViT whose stem starts from it and which is distilled from it, each stage into
``<run folder>/<stage>``; the recipe's ``serve`` stage (the student) is what the demo
indexes, ``--stage teacher`` the other. ``--config`` takes either kind of file.

The run folder's ``demo-run.json`` records the dataset's fingerprint, every stage's
resolved config (minus where-it-runs keys) and, per finished stage, the SHA-256 of its
``best.safetensors``. All match: the model is reused. Same data and configs: finished
stages are kept and the others resume. Anything else: the folder is cleared and every
stage trained again.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commandline.errors import CommandError
from medret.demo_parts import DemoData, as_json, duration, read_json, say, write_json

if TYPE_CHECKING:
    from archives.records import Archive
    from training.config import TrainConfig
    from training.recipe import StageRun

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPE = CONFIGS / "cpu_recipe.yaml"  # the synthetic demo's
QUALITY_RECIPE = CONFIGS / "quality_cpu.yaml"  # a real dataset's
RUN_MARKER = "demo-run.json"
SINGLE_STAGE = "model"  # the name a one-run config's stage goes by

# Training throughput per CPU core at a reference image side, measured on the development
# machines (2 cores); it scales with the pixel count. Only used to tell the person roughly
# how long training takes: (train images/s, embedded images/s, reference side).
THROUGHPUT_PER_CORE = {
    "vit": (90.0, 300.0, 96),  # the CPU recipe's tiny ViT
    "cnn": (90.0, 300.0, 96),
    "efficientnet_lite0": (23.0, 60.0, 128),
    "vit+efficientnet_lite0": (17.0, 40.0, 128),  # the hybrid ViT of the quality recipe
}
DECODE_IMAGES_PER_S_PER_CORE = 150.0


def run_folder(demo_dir: Path, data: DemoData) -> Path:
    if data.synthetic:
        return demo_dir / "run"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", data.path.resolve().name).strip("-.") or "data"
    return demo_dir / f"run-{name}"


def default_config(data: DemoData) -> Path:
    return RECIPE if data.synthetic else QUALITY_RECIPE


def recipe_name(config: Path) -> str:
    if config == RECIPE:
        return "the CPU recipe"
    if config == QUALITY_RECIPE:
        return "the quality recipe"
    return str(config)


def stage_plan(
    args: argparse.Namespace, data: DemoData, run_dir: Path
) -> tuple[Path, list[StageRun], str]:
    """The config file, the stages it trains (pointed at the demo's data, run folder and
    pixel cache) and the name of the stage to serve."""
    from training.config import load_config
    from training.recipe import Stage, StageRun, is_recipe, load_recipe, stage_runs

    config = Path(args.config) if args.config is not None else default_config(data)
    if not config.is_file():
        raise CommandError(
            f"no training config at {config} (the defaults are configs/cpu_recipe.yaml and "
            "configs/quality_cpu.yaml of the checkout, which an installed wheel lacks: give "
            "one with --config)"
        )
    strings = {
        "data.path": str(data.path),
        "data.layout": data.layout,
        "data.cache_dir": str(run_dir.parent / "cache"),
        "device": args.device,
    }
    if is_recipe(config):
        recipe = load_recipe(config)
        runs = stage_runs(recipe, run_dir, ["tensorboard=false"], strings, args.epochs)
        serve = args.stage or recipe.serve
        recipe.stage(serve)  # an unknown --stage is refused by name
        return config, runs, serve
    if args.stage is not None:
        raise CommandError(
            f"--stage {args.stage}: {config} is one training run, not a recipe of stages"
        )
    cfg = load_config(config, ["tensorboard=false"], strings={**strings, "out_dir": str(run_dir)})
    if args.epochs:
        cfg = cfg.with_epochs_per_phase(args.epochs)
    return config, [StageRun(Stage(SINGLE_STAGE, config), cfg)], SINGLE_STAGE


def prepare_model(args: argparse.Namespace, data: DemoData, run_dir: Path) -> Path:
    """Step 2: the served stage's checkpoint for ``data``: reused, resumed or trained now."""
    from model.checkpoint import file_sha256
    from training.loop import train
    from training.recipe import train_stages
    from training.state import STATE_FILE, comparable_config

    config, runs, serve = stage_plan(args, data, run_dir)
    served = next(r for r in runs if r.stage.name == serve)
    wanted_config = {r.stage.name: comparable_config(r.config.to_dict()) for r in runs}
    marker = read_json(run_dir / RUN_MARKER) or {}
    recorded_config, recorded = recorded_stages(marker)
    same_run = (
        not args.fresh
        and marker.get("dataset") == data.fingerprint
        and recorded_config == as_json(wanted_config)
    )
    done: dict[str, str] = dict(recorded) if same_run else {}
    # what each finished or started stage learnt or started from: the SHA-256 of the
    # best file of each of its sources (teacher, init), comma-joined
    taught = marker.get("teachers") if same_run else None
    teachers: dict[str, str] = dict(taught) if isinstance(taught, dict) else {}

    def sources_now(run: StageRun) -> str | None:
        names = run.stage.sources
        if any(name not in done for name in names):
            return None
        return ",".join(done[name] for name in names)

    def finished(run: StageRun) -> bool:
        sha = done.get(run.stage.name)
        if not sha or not run.best_path.is_file() or file_sha256(run.best_path) != sha:
            return False
        if not run.stage.sources:
            return True
        learnt = sources_now(run)
        return learnt is not None and teachers.get(run.stage.name) == learnt

    def save_marker() -> None:
        write_json(
            run_dir / RUN_MARKER,
            {
                "dataset": data.fingerprint,
                "config": wanted_config,
                "checkpoint_sha256": done,
                "teachers": teachers,
            },
        )

    if all(finished(r) for r in runs):
        say(2, f"model: reusing {served.best_path} (trained on this data with this config)")
        note_heat_maps(runs, served)
        return served.best_path
    if not same_run and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_marker()
    train_count = len(data.archive.split("train"))
    stages = "; ".join(describe_stage(r) for r in runs)
    eta = "" if data.synthetic else f"; {estimate(runs, data.archive)}"
    say(
        2,
        f"model: {recipe_name(config)} on {train_count:,} training images into {run_dir}: "
        f"{stages}{eta}",
    )
    started = time.perf_counter()

    def train_one(run: StageRun, number: int) -> None:
        name = run.stage.name
        label = "" if len(runs) == 1 else f"stage {number}/{len(runs)} {name}: "
        if finished(run):
            say(2, f"model: {label}reusing {run.best_path}")
            return
        out_dir = Path(run.config.out_dir)
        stale = name in done  # finished once, but its best file is gone or changed
        learnt = sources_now(run)
        if run.stage.sources and teachers.get(name) != learnt:
            stale = True  # distilled or started from another teacher than today's
            teachers[name] = learnt or ""
        if stale:  # start this stage afresh
            shutil.rmtree(out_dir, ignore_errors=True)
            done.pop(name, None)
            save_marker()
        resume = (out_dir / STATE_FILE).is_file()
        say(2, f"model: {label}{'resuming' if resume else 'training'} into {out_dir}")
        stage_started = time.perf_counter()
        result = train(run.config, resume=resume)
        if result.best_path is None:
            raise CommandError(f"training in {out_dir} produced no best model")
        done[name] = file_sha256(result.best_path)
        save_marker()
        metric = result.history[-1]["selection"]["metric"] if result.history else "score"
        say(
            2,
            f"model: {label}{result.best_path} (validation {metric} {result.best_score:.3f} at "
            f"epoch {result.best_epoch} of {result.epochs_run}), trained in "
            f"{duration(time.perf_counter() - stage_started)}",
        )

    train_stages(runs, train_one)
    if len(runs) > 1:
        say(
            2,
            f"model: serving stage {serve!r}, {served.best_path} (all stages trained in "
            f"{duration(time.perf_counter() - started)})",
        )
    note_heat_maps(runs, served)
    return served.best_path


def note_heat_maps(runs: list[StageRun], served: StageRun) -> None:
    """Say so when the served network has no patch tokens to explain (EfficientNet-Lite0)."""
    if served.config.model.architecture != "vit":
        vit = next((r.stage.name for r in runs if r.config.model.architecture == "vit"), None)
        other = f"; --stage {vit} serves the ViT" if vit else ""
        say(2, f"model: the viewer's heat maps (/explain) need the ViT{other}")


def recorded_stages(marker: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """A run marker's stage configs (rebuilt with today's defaults, as JSON) and the SHA-256
    of each finished stage. A marker written before recipes had one flat config and one
    SHA-256: it reads as the one stage it was."""
    from training.state import comparable_config

    configs, shas = marker.get("config"), marker.get("checkpoint_sha256")
    if isinstance(configs, dict) and "phases" in configs:  # before recipes: one run
        configs = {SINGLE_STAGE: configs}
        shas = {SINGLE_STAGE: shas} if isinstance(shas, str) else {}
    if not isinstance(configs, dict) or not all(isinstance(c, dict) for c in configs.values()):
        return None, {}
    rebuilt = as_json({name: comparable_config(c) for name, c in configs.items()})
    if not isinstance(shas, dict):
        return rebuilt, {}
    return rebuilt, {k: v for k, v in shas.items() if isinstance(v, str)}


def describe_stage(run: StageRun) -> str:
    cfg = run.config
    side = cfg.model.image_size
    phases = f"{len(cfg.phases)} phase{'s' if len(cfg.phases) > 1 else ''}"
    what = f"{phases} × {cfg.phases[0].epochs} epochs, {side} px"
    network = cfg.model.architecture
    if cfg.model.stem != "patch":
        network += f" + {cfg.model.stem} stem"
    if run.stage.name == SINGLE_STAGE:
        return f"{network} ({what})"
    return f"{run.stage.name} = {network} ({what})"


def estimate(runs: list[StageRun], archive: Archive) -> str:
    """A rough training time on this machine's CPU (the measured throughputs above)."""
    import torch

    devices = {run.config.device for run in runs}
    if devices - {"auto", "cpu"} or ("auto" in devices and torch.cuda.is_available()):
        return "on the GPU this takes minutes"
    cores = max(1, torch.get_num_threads())
    n_train = len(archive.split("train"))
    n_val = len(archive.split("val"))

    def rates(cfg: TrainConfig) -> tuple[float, float]:
        """Seconds per training image and per embedded image."""
        m = cfg.model
        network = m.architecture if m.stem == "patch" else f"{m.architecture}+{m.stem}"
        train_rate, embed_rate, side = THROUGHPUT_PER_CORE.get(network, THROUGHPUT_PER_CORE["vit"])
        scale = (cfg.model.image_size / side) ** 2 / cores
        return scale / train_rate, scale / embed_rate

    seconds = 0.0
    for run in runs:
        cfg = run.config
        per_train, per_embed = rates(cfg)
        embedded = n_val + (n_train if cfg.val_gallery == "train" else 0)
        per_epoch = n_train * per_train + embedded * per_embed
        seconds += cfg.total_epochs * per_epoch
        seconds += (n_train + n_val) / (DECODE_IMAGES_PER_S_PER_CORE * cores)
        teacher = next((r for r in runs if str(r.best_path) == cfg.loss.teacher), None)
        if teacher is not None:  # the soft targets: one pass of the teacher
            seconds += n_train * rates(teacher.config)[1]
    return f"about {duration(seconds)} on {cores} CPU core{'s' if cores > 1 else ''}"
