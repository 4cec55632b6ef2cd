from __future__ import annotations

import json

import pytest
import torch

from training.losses import LossWeights
from training.schedule import (
    DEFAULT_PHASES,
    Phase,
    PhaseSchedule,
    make_adam,
    set_lr,
)

LR0 = 4e-4


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        # docs/training.md: phase 1 LR·(1/4)^(e/70), phase 2 LR·(1/16)^((e−70)/70),
        # phase 3 LR·(1/64)^((e−140)/70)
        (0, LR0),
        (35, LR0 * 0.25**0.5),  # halfway through phase 1: 2e-4
        (69.999, LR0 * 0.25 ** (69.999 / 70)),  # ≈ 1e-4 just before the boundary
        (70, LR0),  # phase 2 restarts from the initial LR
        (105, LR0 * (1 / 16) ** 0.5),  # 1e-4
        (140, LR0),
        (209, LR0 * (1 / 64) ** (69 / 70)),
        (209.5, LR0 * (1 / 64) ** (69.5 / 70)),  # fractional epochs decay step-wise
        (210, LR0 / 64),  # end of training: the last phase's final value
    ],
)
def test_learning_rate_follows_the_design_formulas(epoch: float, expected: float) -> None:
    schedule = PhaseSchedule(DEFAULT_PHASES)
    assert schedule.lr(epoch) == pytest.approx(expected, rel=1e-12)


def test_learning_rate_halfway_values_are_round_numbers() -> None:
    schedule = PhaseSchedule(DEFAULT_PHASES)
    assert schedule.lr(35) == pytest.approx(2e-4)
    assert schedule.lr(69.999) == pytest.approx(1e-4, rel=1e-4)
    assert schedule.lr(105) == pytest.approx(1e-4)
    assert schedule.lr(175) == pytest.approx(5e-5)


def test_phase_boundaries_and_epoch_in_phase() -> None:
    schedule = PhaseSchedule(DEFAULT_PHASES)
    assert schedule.total_epochs == 210
    cases = {0: (0, 0), 69: (0, 69), 70: (1, 0), 139: (1, 69), 140: (2, 0), 209: (2, 69)}
    for epoch, (phase, within) in cases.items():
        assert schedule.phase_index(epoch) == phase
        assert schedule.epoch_in_phase(epoch) == within
    assert schedule.is_phase_start(70)
    assert not schedule.is_phase_start(71)
    for bad in (-1, 210):
        with pytest.raises(ValueError, match="outside"):
            schedule.phase_index(bad)
    with pytest.raises(ValueError, match="outside"):
        schedule.lr(210.5)


def test_weights_change_between_phases_metric_first_ce_last() -> None:
    schedule = PhaseSchedule(DEFAULT_PHASES)
    first, second, third = schedule.weights(0), schedule.weights(70), schedule.weights(209)
    assert schedule.weights(69) == first
    assert len({first, second, third}) == 3
    assert first.contrastive > first.ce
    assert first.triplet > first.ce
    assert third.ce > third.contrastive
    assert third.ce > third.triplet
    assert first.ce < second.ce < third.ce
    assert first.contrastive > second.contrastive > third.contrastive
    assert all(w.distill == 0 for w in (first, second, third))


def test_scaled_schedule_keeps_weights_and_shape_with_other_lengths() -> None:
    short = PhaseSchedule.scaled(2)
    assert short.total_epochs == 6
    assert [p.weights for p in short.phases] == [p.weights for p in DEFAULT_PHASES]
    assert short.lr(1) == pytest.approx(LR0 * 0.25**0.5)  # halfway through phase 1
    assert short.lr(2) == pytest.approx(LR0)
    assert short.lr(5.5) == pytest.approx(LR0 * (1 / 64) ** 0.75)
    assert short.phase_index(4) == 2


def test_uneven_phase_lengths() -> None:
    w = LossWeights(ce=1.0, contrastive=0.0, triplet=0.0)
    schedule = PhaseSchedule([Phase(3, w, 2.0), Phase(5, w, 10.0)], base_lr=1e-3)
    assert schedule.total_epochs == 8
    assert schedule.phase_index(2) == 0
    assert schedule.phase_index(3) == 1
    assert schedule.lr(1.5) == pytest.approx(1e-3 * 0.5**0.5)
    assert schedule.lr(5.5) == pytest.approx(1e-3 * 0.1**0.5)


def test_schedule_round_trips_through_json() -> None:
    schedule = PhaseSchedule.scaled(5, base_lr=1e-4)
    d = json.loads(json.dumps(schedule.to_dict()))
    restored = PhaseSchedule.from_dict(d)
    assert restored == schedule
    assert restored.phases == schedule.phases
    assert restored.lr(7.25) == schedule.lr(7.25)
    with pytest.raises(ValueError, match="unknown"):
        PhaseSchedule.from_dict({**d, "warmup": 3})


def test_invalid_schedules_are_refused() -> None:
    w = LossWeights(ce=1.0, contrastive=0.0, triplet=0.0)
    with pytest.raises(ValueError, match="phase"):
        PhaseSchedule([])
    with pytest.raises(ValueError, match="epoch"):
        Phase(0, w, 4.0)
    with pytest.raises(ValueError, match="lr_decay"):
        Phase(3, w, 0.0)


def test_make_adam_uses_the_paper_hyperparameters() -> None:
    layer = torch.nn.Linear(3, 2)
    opt = make_adam(layer.parameters(), 4e-4)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam)
    assert group["lr"] == 4e-4
    assert group["betas"] == (0.9, 0.999)
    assert group["eps"] == 1e-8
    assert group["weight_decay"] == 0


def test_set_lr_updates_every_group_and_honours_lr_scale() -> None:
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)
    opt = make_adam([{"params": a.parameters()}, {"params": b.parameters(), "lr_scale": 0.1}], 1.0)
    set_lr(opt, 2e-4)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)
    assert opt.param_groups[1]["lr"] == pytest.approx(2e-5)
