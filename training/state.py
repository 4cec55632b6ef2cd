"""What a run keeps in its folder to be resumed: ``state.pt`` and ``metrics.jsonl``.

``state.pt`` (:func:`save_state`, :func:`load_state`) holds the weights, Adam's moments, the
sampler's position, the next epoch, the best score so far, the history of epoch records and
the resolved config; it is written after every epoch, before anything else, and is the
truth a resumed run starts from. ``metrics.jsonl`` holds one JSON record per finished
epoch; on resume it is rewritten from the state's history, dropping the lines of an epoch
that was cut short. Both are replaced atomically (:mod:`files.atomic`).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from files.atomic import atomic_path, atomic_write_text
from training.config import TrainConfig, TrainConfigError, config_from_dict
from training.errors import TrainingError
from training.sampler import ClassBalancedBatchSampler, ShuffledBatchSampler

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
STATE_FORMAT = "medret-train-state"

# Config keys that may change between an interrupted run and its resumption: they say where
# and how the run executes, not what it computes.
RUNTIME_KEYS = frozenset({"out_dir", "device", "tensorboard", "threads", "eval_batch_size"})
RUNTIME_DATA_KEYS = frozenset({"workers", "cache_dir", "path"})


def comparable_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a config dict that must match for ``--resume``.

    The dict is first rebuilt through :class:`TrainConfig`, so a config saved before a key
    existed compares equal to one with that key at its default.
    """
    # a key that no longer exists, say: compared as saved, and found different
    with contextlib.suppress(TrainConfigError, TypeError, ValueError):
        cfg = config_from_dict(cfg).to_dict()
    out = {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}
    out["data"] = {k: v for k, v in cfg.get("data", {}).items() if k not in RUNTIME_DATA_KEYS}
    return out


@dataclass
class Progress:
    """Where a run stands: the next epoch to train, the best so far, the epoch records."""

    next_epoch: int
    best: dict[str, Any]
    history: list[dict[str, Any]]


def save_state(
    out_dir: Path,
    cfg: TrainConfig,
    progress: Progress,
    *,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: ClassBalancedBatchSampler | ShuffledBatchSampler,
) -> None:
    """Replace ``out_dir/state.pt`` with the run as it stands after an epoch."""
    state = {
        "format": STATE_FORMAT,
        "config": cfg.to_dict(),
        "epoch": progress.next_epoch,
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "sampler": sampler.state_dict(),
        "best": progress.best,
        "history": progress.history,
    }
    with atomic_path(out_dir / STATE_FILE) as temp:
        torch.save(state, temp)


def load_state(
    out_dir: Path,
    cfg: TrainConfig,
    device: torch.device,
    *,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: ClassBalancedBatchSampler | ShuffledBatchSampler,
) -> Progress:
    """Load ``out_dir/state.pt`` into the network, optimizer and sampler; returns the progress.

    Refuses a missing or foreign file and a config that differs from the saved one in
    anything but :data:`RUNTIME_KEYS` / :data:`RUNTIME_DATA_KEYS`.
    """
    path = out_dir / STATE_FILE
    if not path.exists():
        raise TrainingError(f"--resume: no training state at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # a torn or foreign file
        raise TrainingError(f"--resume: {path} is not a readable training state: {exc}") from exc
    if state.get("format") != STATE_FORMAT:
        raise TrainingError(f"--resume: {path} is not a medret training state")
    saved = comparable_config(state["config"])
    current = comparable_config(cfg.to_dict())
    if saved != current:
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise TrainingError(
            f"--resume: the configuration differs from the interrupted run's in {diff}"
        )
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    return Progress(int(state["epoch"]), dict(state["best"]), list(state["history"]))


def append_metrics(out_dir: Path, record: dict[str, Any]) -> None:
    """Add one epoch's record to ``out_dir/metrics.jsonl``."""
    with (out_dir / METRICS_FILE).open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def rewrite_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Replace ``out_dir/metrics.jsonl`` with the records of ``history`` (one per line)."""
    atomic_write_text(out_dir / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))
