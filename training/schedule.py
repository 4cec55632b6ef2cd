"""The phased schedule (docs/training.md): loss weights and learning rate as functions of the epoch.

Training runs in phases (three of 70 epochs by default, 210 in all). Each phase has its own
:class:`~training.losses.LossWeights` and an exponential learning-rate decay that starts again
from ``base_lr`` at the phase's first epoch and falls by the factor ``lr_decay`` over the
phase::

    lr(e) = base_lr · (1 / lr_decay) ** ((e − phase_start) / phase_epochs)

which with the defaults is the paper's ``4e-4·(1/4)^(e/70)``, ``4e-4·(1/16)^((e−70)/70)``,
``4e-4·(1/64)^((e−140)/70)``. ``e`` may be fractional (``epoch + step / steps_per_epoch``)
so the rate decays step by step inside an epoch; the phase lengths may be anything.

Default loss weights — the paper only says that early phases weight the metric losses high and
later phases raise the cross-entropy weight; the numbers are ours:

* **Phase 1 — ce 0.2, contrastive 1.0, triplet 1.0.** The features start random; shaping the
  embedding space (what retrieval searches) comes first, and a small CE term still starts the
  classifier head without letting its gradient dominate the shared embedding.
* **Phase 2 — 0.6 / 0.6 / 0.6.** With the clusters formed, classification and metric
  structure are refined together at equal weight.
* **Phase 3 — ce 1.0, contrastive 0.2, triplet 0.2.** The classifier is fitted on a settled
  embedding at the lowest learning rates (decay 64); the small metric terms keep the
  embedding from drifting towards what only CE needs.

The distillation weight is 0 in the defaults; a run with a teacher sets it per phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.optim.optimizer import ParamsT

from training.losses import LossWeights


@dataclass(frozen=True)
class Phase:
    """``epochs`` epochs at ``weights``; the LR falls by ``lr_decay`` over the phase."""

    epochs: int
    weights: LossWeights
    lr_decay: float

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"a phase needs at least one epoch, got {self.epochs}")
        if self.lr_decay <= 0:
            raise ValueError(f"lr_decay must be positive, got {self.lr_decay}")

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr_decay": self.lr_decay, "weights": self.weights.as_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Phase:
        return cls(
            epochs=int(d["epochs"]),
            weights=LossWeights(**d["weights"]),
            lr_decay=float(d["lr_decay"]),
        )


DEFAULT_PHASES: tuple[Phase, ...] = (
    Phase(epochs=70, weights=LossWeights(ce=0.2, contrastive=1.0, triplet=1.0), lr_decay=4.0),
    Phase(epochs=70, weights=LossWeights(ce=0.6, contrastive=0.6, triplet=0.6), lr_decay=16.0),
    Phase(epochs=70, weights=LossWeights(ce=1.0, contrastive=0.2, triplet=0.2), lr_decay=64.0),
)
DEFAULT_BASE_LR = 4e-4


class PhaseSchedule:
    """Which phase an epoch is in, its loss weights and its learning rate (epochs 0-based)."""

    def __init__(self, phases: Sequence[Phase], base_lr: float = DEFAULT_BASE_LR) -> None:
        if not phases:
            raise ValueError("a schedule needs at least one phase")
        if base_lr <= 0:
            raise ValueError(f"base_lr must be positive, got {base_lr}")
        self.phases: tuple[Phase, ...] = tuple(phases)
        self.base_lr = base_lr
        self.starts: tuple[int, ...] = tuple(
            sum(p.epochs for p in self.phases[:i]) for i in range(len(self.phases))
        )
        self.total_epochs: int = sum(p.epochs for p in self.phases)

    @classmethod
    def scaled(
        cls,
        epochs_per_phase: int,
        phases: Sequence[Phase] = DEFAULT_PHASES,
        base_lr: float = DEFAULT_BASE_LR,
    ) -> PhaseSchedule:
        """The same weights and decays with every phase ``epochs_per_phase`` long."""
        return cls([replace(p, epochs=epochs_per_phase) for p in phases], base_lr=base_lr)

    def _phase_of(self, epoch: float) -> int:
        if not 0 <= epoch < self.total_epochs:
            raise ValueError(f"epoch {epoch} is outside the schedule [0, {self.total_epochs})")
        index = 0
        for i, start in enumerate(self.starts):
            if epoch >= start:
                index = i
        return index

    def phase_index(self, epoch: int) -> int:
        """0-based index of the phase holding ``epoch``."""
        return self._phase_of(epoch)

    def epoch_in_phase(self, epoch: int) -> int:
        """Epochs since the start of ``epoch``'s phase."""
        return epoch - self.starts[self._phase_of(epoch)]

    def weights(self, epoch: int) -> LossWeights:
        return self.phases[self._phase_of(epoch)].weights

    def lr(self, epoch: float) -> float:
        """The learning rate at a (possibly fractional) global epoch in ``[0, total_epochs]``;
        ``total_epochs`` itself (a finished run) gives the last phase's final value."""
        i = len(self.phases) - 1 if epoch == self.total_epochs else self._phase_of(epoch)
        phase = self.phases[i]
        progress = (epoch - self.starts[i]) / phase.epochs  # in [0, 1]
        return self.base_lr * math.pow(1.0 / phase.lr_decay, progress)

    def is_phase_start(self, epoch: int) -> bool:
        """True at the first epoch of every phase (where the LR jumps back to ``base_lr``)."""
        return epoch in self.starts

    def to_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "phases": [p.to_dict() for p in self.phases]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PhaseSchedule:
        unknown = set(d) - {"base_lr", "phases"}
        if unknown:
            raise ValueError(f"unknown schedule keys: {sorted(unknown)}")
        return cls([Phase.from_dict(p) for p in d["phases"]], base_lr=float(d["base_lr"]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhaseSchedule):
            return NotImplemented
        return self.phases == other.phases and self.base_lr == other.base_lr

    def __hash__(self) -> int:
        return hash((self.phases, self.base_lr))

    def __repr__(self) -> str:
        return f"PhaseSchedule(phases={self.phases!r}, base_lr={self.base_lr!r})"


def make_adam(params: ParamsT, lr: float) -> torch.optim.Adam:
    """Adam as the paper sets it: β 0.9/0.999, ε 1e-8, no weight decay."""
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's LR to ``lr`` times its optional ``"lr_scale"`` (default 1),
    so a group given ``lr_scale=0.1`` (e.g. a pretrained backbone) follows the schedule at a
    tenth of the rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr * float(group.get("lr_scale", 1.0))
