"""A recipe: training runs in stages, in order, each stage a training config of its own;
a later stage may learn from an earlier one (``teacher:`` names the stage whose best
checkpoint it distils from).

A recipe file is YAML with ``stages`` and ``serve``::

    stages:
      - {name: teacher, config: teacher_cpu.yaml}
      - {name: student, config: student_cpu.yaml, teacher: teacher, init: teacher}
    serve: student   # the stage whose best checkpoint the recipe hands on

``config`` paths are relative to the recipe file. Stage ``name`` trains into
``<out>/<name>``; ``--set`` overrides and the literal settings (data path, device, cache)
apply to every stage; a stage with ``teacher`` has its ``loss.teacher`` set to that stage's
``best.safetensors``, and a stage with ``init`` its ``model.pretrained`` (the weights it
starts from; today only a hybrid ViT's stem from an EfficientNet-Lite0 stage).
``serve`` is what ``medret demo`` indexes and serves (``--stage`` picks another). A config
file without ``stages`` is a one-stage run, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from training.config import TrainConfig, TrainConfigError, load_config

STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
BEST_FILE = "best.safetensors"  # the name training/loop.py exports the best epoch as


@dataclass(frozen=True)
class Stage:
    name: str
    config: Path
    teacher: str | None = None
    init: str | None = None  # the stage whose best checkpoint this one starts from

    @property
    def sources(self) -> tuple[str, ...]:
        """The earlier stages this one learns from or starts from, each once, in order."""
        return tuple(dict.fromkeys(s for s in (self.teacher, self.init) if s is not None))


@dataclass(frozen=True)
class Recipe:
    path: Path
    stages: tuple[Stage, ...]
    serve: str

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        names = ", ".join(s.name for s in self.stages)
        raise TrainConfigError(f"recipe {self.path} has no stage {name!r} (it has {names})")


@dataclass(frozen=True)
class StageRun:
    """One stage resolved into its training config."""

    stage: Stage
    config: TrainConfig

    @property
    def best_path(self) -> Path:
        return Path(self.config.out_dir) / BEST_FILE


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TrainConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"config file {path} is not valid YAML: {exc}") from exc


def is_recipe(path: str | Path | None) -> bool:
    """Whether the config file at ``path`` is a recipe (has ``stages``), not one run."""
    if path is None:
        return False
    data = _read_yaml(Path(path))
    return isinstance(data, dict) and "stages" in data


def load_recipe(path: str | Path) -> Recipe:
    """The recipe at ``path``, checked: known keys, unique names, teachers that come first,
    a ``serve`` stage that exists, stage configs that exist."""
    path = Path(path)
    data = _read_yaml(path)
    where = f"recipe {path}"
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
        raise TrainConfigError(f"{where} must hold a mapping with a list of stages")
    unknown = set(data) - {"stages", "serve"}
    if unknown:
        raise TrainConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    stages: list[Stage] = []
    for i, raw in enumerate(data["stages"], 1):
        if not isinstance(raw, dict):
            raise TrainConfigError(f"{where}: stage {i} must be a mapping")
        extra = set(raw) - {"name", "config", "teacher", "init"}
        if extra:
            raise TrainConfigError(f"{where}: stage {i} has unknown key(s) {sorted(extra)}")
        name, config = raw.get("name"), raw.get("config")
        if not isinstance(name, str) or not STAGE_NAME.match(name):
            raise TrainConfigError(
                f"{where}: stage {i} needs a name of letters, digits, - or _ (got {name!r})"
            )
        if any(s.name == name for s in stages):
            raise TrainConfigError(f"{where}: two stages are named {name!r}")
        if not isinstance(config, str) or not config:
            raise TrainConfigError(f"{where}: stage {name!r} needs a config file")
        config_path = (path.parent / config).resolve()
        if not config_path.is_file():
            raise TrainConfigError(f"{where}: stage {name!r}: {config_path} does not exist")
        teacher, init = raw.get("teacher"), raw.get("init")
        for key, source, verb in (
            ("teacher", teacher, "learns from"),
            ("init", init, "starts from"),
        ):
            if source is not None and not any(s.name == source for s in stages):
                raise TrainConfigError(
                    f"{where}: stage {name!r} {verb} {source!r} ({key}), "
                    "which is not an earlier stage"
                )
        stages.append(Stage(name, config_path, teacher, init))
    if not stages:
        raise TrainConfigError(f"{where} has no stages")
    serve = data.get("serve", stages[-1].name)
    recipe = Recipe(path, tuple(stages), str(serve))
    recipe.stage(recipe.serve)  # it must exist
    return recipe


def stage_runs(
    recipe: Recipe,
    out_dir: str | Path,
    overrides: Sequence[str] = (),
    strings: dict[str, str] | None = None,
    epochs_per_phase: int | None = None,
) -> list[StageRun]:
    """Every stage's training config, each training into ``out_dir/<stage>``."""
    runs: list[StageRun] = []
    out = Path(out_dir)
    for stage in recipe.stages:
        literal = dict(strings or {})
        literal["out_dir"] = str(out / stage.name)
        if stage.teacher is not None:
            literal["loss.teacher"] = str(out / stage.teacher / BEST_FILE)
        if stage.init is not None:
            literal["model.pretrained"] = str(out / stage.init / BEST_FILE)
        try:
            cfg = load_config(stage.config, list(overrides), strings=literal)
        except TrainConfigError as exc:
            raise TrainConfigError(f"stage {stage.name!r} ({stage.config.name}): {exc}") from exc
        if epochs_per_phase is not None:
            cfg = cfg.with_epochs_per_phase(epochs_per_phase)
        if stage.init is not None:
            source = next(r for r in runs if r.stage.name == stage.init).config.model
            if cfg.model.stem != "efficientnet_lite0" or source.architecture != (
                "efficientnet_lite0"
            ):
                raise TrainConfigError(
                    f"stage {stage.name!r} starts from {stage.init!r} (init): only a hybrid "
                    "ViT (model.stem efficientnet_lite0) can start from an earlier stage, "
                    "and only from an EfficientNet-Lite0 one"
                )
        runs.append(StageRun(stage, cfg))
    return runs


def train_stages(
    runs: Sequence[StageRun],
    train_one: Callable[[StageRun, int], Any],
) -> list[Any]:
    """Train ``runs`` in order with ``train_one(run, number)``; a later stage starts only
    after the ones it learns or starts from exported their best checkpoints."""
    results = []
    for number, run in enumerate(runs, 1):
        for name in run.stage.sources:
            source = next(r for r in runs if r.stage.name == name)
            if not source.best_path.is_file():
                verb = "learns from" if name == run.stage.teacher else "starts from"
                raise TrainConfigError(
                    f"stage {run.stage.name!r} {verb} {name!r}, which exported no "
                    f"best checkpoint ({source.best_path})"
                )
        results.append(train_one(run, number))
    return results
