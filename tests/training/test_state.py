"""The resumable state (state.pt) and the metrics file: round trip, refusals, atomic rewrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from labels import Task
from training.config import TrainConfig, load_config
from training.distributed import SINGLE_PROCESS
from training.errors import TrainingError
from training.sampler import ClassBalancedBatchSampler, ShuffledBatchSampler
from training.setup import batch_sampler, build_network, optimizer
from training.state import (
    METRICS_FILE,
    STATE_FILE,
    Progress,
    append_metrics,
    comparable_config,
    load_state,
    rewrite_metrics,
    save_state,
)

CPU = torch.device("cpu")
TARGETS = np.repeat(np.arange(3), 8)  # 3 classes × 8 training images
BatchSampler = ClassBalancedBatchSampler | ShuffledBatchSampler


def small_config(**overrides: object) -> TrainConfig:
    settings = {
        "model.variant": "tiny",
        "model.depth": 1,
        "model.image_size": 32,
        "model.embed_dim": 16,
        "batch_size": 6,
        "samples_per_class": 2,
        **overrides,
    }
    return load_config(None, [f"{key}={value}" for key, value in settings.items()])


def run_parts(cfg: TrainConfig, seed: int) -> tuple[nn.Module, torch.optim.Adam, BatchSampler]:
    torch.manual_seed(seed)
    net, _ = build_network(cfg, 3, Task.SINGLE_LABEL)
    return net, optimizer(net, cfg), batch_sampler(cfg, TARGETS, Task.SINGLE_LABEL, SINGLE_PROCESS)


def test_a_saved_state_loads_into_a_fresh_run(tmp_path: Path) -> None:
    cfg = small_config()
    net, adam, sampler = run_parts(cfg, seed=1)
    net(torch.rand(2, 3, 32, 32)).logits.sum().backward()
    adam.step()  # Adam now has moments worth keeping
    sampler.set_epoch(3)
    progress = Progress(4, {"score": 0.5, "epoch": 2}, [{"epoch": 1}, {"epoch": 2}])
    save_state(tmp_path, cfg, progress, net=net, optimizer=adam, sampler=sampler)
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temporary left behind

    fresh_net, fresh_adam, fresh_sampler = run_parts(cfg, seed=2)
    loaded = load_state(
        tmp_path,
        cfg,
        CPU,
        net=fresh_net,
        optimizer=fresh_adam,
        sampler=fresh_sampler,
    )
    assert loaded == progress
    for key, value in net.state_dict().items():
        torch.testing.assert_close(fresh_net.state_dict()[key], value)
    assert fresh_adam.state_dict()["state"].keys() == adam.state_dict()["state"].keys()
    assert fresh_sampler.state_dict() == sampler.state_dict()


def test_resume_refuses_a_missing_or_foreign_state_and_a_changed_config(tmp_path: Path) -> None:
    cfg = small_config()
    net, adam, sampler = run_parts(cfg, seed=1)
    parts = {"net": net, "optimizer": adam, "sampler": sampler}
    with pytest.raises(TrainingError, match="no training state"):
        load_state(tmp_path, cfg, CPU, **parts)
    torch.save({"format": "something else"}, tmp_path / STATE_FILE)
    with pytest.raises(TrainingError, match="not a medret training state"):
        load_state(tmp_path, cfg, CPU, **parts)
    (tmp_path / STATE_FILE).write_bytes(b"torn")
    with pytest.raises(TrainingError, match="not a readable training state"):
        load_state(tmp_path, cfg, CPU, **parts)

    save_state(tmp_path, cfg, Progress(1, {}, []), **parts)
    moved = small_config(out_dir="elsewhere", device="cpu", eval_batch_size=7)
    assert load_state(tmp_path, moved, CPU, **parts).next_epoch == 1
    with pytest.raises(TrainingError, match=r"differs .* \['seed'\]"):
        load_state(tmp_path, small_config(seed=3), CPU, **parts)


def test_comparable_config_ignores_where_and_how_a_run_executes() -> None:
    base = small_config().to_dict()
    moved = small_config(**{"out_dir": "x", "threads": 2, "data.workers": 5}).to_dict()
    assert comparable_config(base) == comparable_config(moved)
    assert comparable_config(base) != comparable_config(small_config(lr=0.1).to_dict())


def test_a_state_saved_before_newer_keys_existed_still_resumes(tmp_path: Path) -> None:
    """A config saved without keys added since (at their defaults now) is the same run."""
    cfg = small_config()
    net, adam, sampler = run_parts(cfg, seed=1)
    parts = {"net": net, "optimizer": adam, "sampler": sampler}
    save_state(tmp_path, cfg, Progress(2, {}, []), **parts)
    state = torch.load(tmp_path / STATE_FILE, weights_only=False)
    old = state["config"]
    for key in ("distill_targets", "geometry_temperature"):
        del old["loss"][key]
    old["phases"] = [{k: v for k, v in p.items() if k != "geometry"} for p in old["phases"]]
    torch.save(state, tmp_path / STATE_FILE)
    assert load_state(tmp_path, cfg, CPU, **parts).next_epoch == 2
    # a key that is not a default of today's config is still a difference
    state["config"]["loss"]["distill_targets"] = "hard"
    torch.save(state, tmp_path / STATE_FILE)
    with pytest.raises(TrainingError, match=r"differs .* \['loss'\]"):
        load_state(tmp_path, cfg, CPU, **parts)


def test_metrics_are_appended_then_rewritten_from_the_history(tmp_path: Path) -> None:
    for epoch in (1, 2, 3):
        append_metrics(tmp_path, {"epoch": epoch})
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    rewrite_metrics(tmp_path, [{"epoch": 1}, {"epoch": 2}])  # epoch 3 was cut short
    assert (tmp_path / METRICS_FILE).read_text() == '{"epoch": 1}\n{"epoch": 2}\n'
    assert [p.name for p in tmp_path.iterdir()] == [METRICS_FILE]
