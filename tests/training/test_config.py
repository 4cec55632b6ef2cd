from __future__ import annotations

from pathlib import Path

import pytest

from training.config import TrainConfigError, default_phases, load_config
from training.recipe import is_recipe, load_recipe, stage_runs

REPO = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_paper() -> None:
    cfg = load_config(None)
    assert cfg.total_epochs == 210
    assert [p.epochs for p in cfg.phases] == [70, 70, 70]
    assert [p.lr_decay for p in cfg.phases] == [4, 16, 64]
    assert cfg.lr == 4e-4
    assert cfg.batch_size == 32
    assert cfg.model.dropout == 0.1
    ce = [p.ce for p in default_phases()]
    metric = [p.contrastive for p in default_phases()]
    assert ce == sorted(ce)
    assert metric == sorted(metric, reverse=True)


def test_cpu_recipe_parses_and_overrides_apply() -> None:
    cfg = load_config(
        REPO / "configs" / "cpu_recipe.yaml",
        ["model.depth=2", "batch_size=16", "augment.hflip=false", "data.path=/x"],
    )
    assert cfg.model.variant == "tiny"
    assert cfg.model.depth == 2
    assert cfg.batch_size == 16
    assert cfg.augment.hflip is False
    assert cfg.data.path == "/x"
    assert cfg.with_epochs_per_phase(1).total_epochs == 3


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path: Path, tmp_path: Path) -> None:
    if is_recipe(path):
        recipe = load_recipe(path)
        configs = [run.config for run in stage_runs(recipe, tmp_path, ["data.path=/x"])]
    else:
        configs = [load_config(path, ["data.path=/x"])]
    for cfg in configs:
        assert cfg.total_epochs > 0
        if any(phase.distill > 0 for phase in cfg.phases):
            assert cfg.loss.teacher  # a distilling run names its teacher


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.depht=2"], "unknown key"),
        (["batch_size=lots"], "batch_size must be a int"),
        (["sampler=random"], "sampler is"),
        (["phases=[]"], "at least one phase"),
        (["nonsense"], "not key=value"),
        (["augment.hflip=maybe"], "true or false"),
    ],
)
def test_bad_configs_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        load_config(None, overrides)


def test_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(TrainConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(TrainConfigError, match="must hold a mapping"):
        load_config(listy)
