"""Recipes: stages of training configs run in order, a later one distilling an earlier one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from training.config import TrainConfigError
from training.recipe import load_recipe, stage_runs

REPO = Path(__file__).resolve().parents[2]
SMALL = [  # --set overrides that apply to every stage: a run of seconds
    "data.cache_dir={cache}",
    "data.workers=0",
    "model.image_size=32",
    "model.embed_dim=32",
    "batch_size=12",
    "samples_per_class=4",
    "batches_per_epoch=3",
    "eval_batch_size=64",
    "device=cpu",
    "tensorboard=false",
]


def recipe_command(recipe: Path, out: Path, data: Path, cache: Path) -> list[str]:
    """`medret train` of a recipe with the SMALL settings."""
    args = [sys.executable, "-m", "medret", "train", "--config", str(recipe), "--out", str(out)]
    args += ["--data", str(data)]
    for o in SMALL:
        args += ["--set", o.format(cache=cache)]
    return args


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_quality_recipe_distils_its_student_from_its_teacher(tmp_path: Path) -> None:
    recipe = load_recipe(REPO / "configs" / "quality_cpu.yaml")
    assert [s.name for s in recipe.stages] == ["teacher", "student"]
    assert recipe.serve == "student"
    teacher, student = stage_runs(recipe, tmp_path / "out", ["data.path=/x"], {"device": "cpu"})
    assert teacher.config.model.architecture == "efficientnet_lite0"
    assert (student.config.model.architecture, student.config.model.stem) == (
        "vit",
        "efficientnet_lite0",
    )
    assert Path(teacher.config.out_dir) == tmp_path / "out" / "teacher"
    best = str(tmp_path / "out" / "teacher" / "best.safetensors")
    assert student.config.loss.teacher == student.config.model.pretrained == best
    assert student.config.device == teacher.config.device == "cpu"
    assert recipe.stage("student").sources == ("teacher",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages: nope", "list of stages"),
        ("stages: []", "no stages"),
        ("stages: [{name: a, config: one.yaml}]\nextra: 1", "unknown key"),
        ("stages: [{name: 'a b', config: one.yaml}]", "needs a name"),
        ("stages: [{name: a, config: one.yaml}, {name: a, config: one.yaml}]", "two stages"),
        ("stages: [{name: a, config: missing.yaml}]", "does not exist"),
        ("stages: [{name: a, config: one.yaml, teacher: b}]", "not an earlier stage"),
        ("stages: [{name: a, config: one.yaml}]\nserve: z", "no stage 'z'"),
        ("stages: [{name: a, config: one.yaml, when: now}]", "unknown key"),
        ("stages: [{name: a, config: one.yaml, init: a}]", "starts from 'a' \\(init\\)"),
    ],
)
def test_bad_recipes_are_refused(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path / "one.yaml", "lr: 1.0e-3\n")
    with pytest.raises(TrainConfigError, match=message):
        load_recipe(write(tmp_path / "recipe.yaml", text))


def test_a_stage_with_a_bad_config_is_named(tmp_path: Path) -> None:
    write(tmp_path / "one.yaml", "lr: fast\n")
    recipe = load_recipe(write(tmp_path / "r.yaml", "stages: [{name: first, config: one.yaml}]"))
    with pytest.raises(TrainConfigError, match="stage 'first'"):
        stage_runs(recipe, tmp_path / "out")


def test_medret_train_runs_every_stage_in_order(tmp_path: Path, tiny_manifest: Path) -> None:
    """A teacher, then a student distilled from it, through `medret train --config`."""
    write(
        tmp_path / "teacher.yaml",
        "model: {variant: tiny, depth: 1}\n"
        "phases: [{epochs: 2, ce: 1.0, contrastive: 0.1, triplet: 0.1}]\n",
    )
    write(
        tmp_path / "student.yaml",
        "model: {variant: tiny, depth: 1}\n"
        "phases: [{epochs: 1, ce: 1.0, contrastive: 0.1, triplet: 0.1, distill: 1.0}]\n",
    )
    recipe = write(
        tmp_path / "recipe.yaml",
        "stages:\n"
        "  - {name: teacher, config: teacher.yaml}\n"
        "  - {name: student, config: student.yaml, teacher: teacher}\n"
        "serve: student\n",
    )
    out = tmp_path / "out"
    args = recipe_command(recipe, out, tiny_manifest, tmp_path / "cache")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.index("stage 1/2: teacher") < proc.stdout.index("stage 2/2: student")
    assert f"the recipe serves student: {out / 'student' / 'best.safetensors'}" in proc.stdout
    student = load_checkpoint(out / "student" / "best.safetensors")
    assert student.meta.training["config"]["loss"]["teacher"] == str(
        out / "teacher" / "best.safetensors"
    )
    # a rerun without --resume refuses to overwrite; with --resume it finds both done
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 2
    assert "already holds a run" in again.stderr
    resumed = subprocess.run(
        [*args, "--resume"], capture_output=True, text=True, timeout=600, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the recipe serves student" in resumed.stdout


def test_a_stage_can_start_from_an_earlier_one(tmp_path: Path, tiny_manifest: Path) -> None:
    """``init: teacher``: the hybrid ViT's stem starts from the fine-tuned EfficientNet."""
    write(
        tmp_path / "teacher.yaml",
        "model: {architecture: efficientnet_lite0}\nphases: [{epochs: 1, ce: 1.0}]\n",
    )
    write(  # a learning rate too small to move the weights: they are the teacher's
        tmp_path / "student.yaml",
        "model: {variant: tiny, depth: 1, stem: efficientnet_lite0}\n"
        "phases: [{epochs: 1, ce: 1.0, distill: 1.0}]\nlr: 1.0e-12\n",
    )
    recipe = write(
        tmp_path / "recipe.yaml",
        "stages:\n"
        "  - {name: teacher, config: teacher.yaml}\n"
        "  - {name: student, config: student.yaml, teacher: teacher, init: teacher}\n"
        "serve: student\n",
    )
    runs = stage_runs(load_recipe(recipe), tmp_path / "out")
    assert runs[1].config.model.pretrained == str(tmp_path / "out/teacher/best.safetensors")
    out = tmp_path / "out"
    args = recipe_command(recipe, out, tiny_manifest, tmp_path / "cache")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    teacher = load_checkpoint(out / "teacher" / "best.safetensors").model.state_dict()
    student = load_checkpoint(out / "student" / "best.safetensors")
    assert student.meta.model.stem == "efficientnet_lite0"
    weights = student.model.state_dict()
    for key in ("_conv_stem.weight", "_blocks.10._project_conv.weight"):
        assert torch.allclose(weights[f"stem.{key}"], teacher[f"backbone.{key}"], atol=1e-6)


def test_only_a_hybrid_can_start_from_an_efficientnet_stage(tmp_path: Path) -> None:
    write(tmp_path / "lite.yaml", "model: {architecture: efficientnet_lite0}\n")
    write(tmp_path / "vit.yaml", "model: {variant: tiny, depth: 1}\n")
    recipe = write(
        tmp_path / "recipe.yaml",
        "stages:\n"
        "  - {name: teacher, config: lite.yaml}\n"
        "  - {name: student, config: vit.yaml, init: teacher}\n",
    )
    with pytest.raises(TrainConfigError, match=r"only a hybrid ViT .* can start from"):
        stage_runs(load_recipe(recipe), tmp_path / "out")
