"""One process or several under ``torchrun``: the rank, the process group, the device.

As in nanoGPT, DDP is detected from the variables ``torchrun`` sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``); only rank 0 logs and writes, and every decision that
changes the control flow (skip a step, refuse to overwrite a run) is taken by all ranks
together, so no rank waits at a barrier the others never reach.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

import model.device as model_device
from model.device import DeviceError
from training.errors import TrainingError

# rank 0 decodes the cache and validates while the others wait at barriers
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistEnv()
"""One process, no ``torchrun``: rank 0 of 1."""


def distributed_env() -> DistEnv:
    """Read what ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK); one process otherwise."""
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def configure_process(env: DistEnv, *, device_spec: str, threads: int | None) -> None:
    """Torch's CPU threads, logging on rank 0 only, and (under ``torchrun``) the process group."""
    if threads:
        torch.set_num_threads(threads)
    if not env.is_main:  # only rank 0 logs
        logging.getLogger().setLevel(logging.WARNING)
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device_spec != "cpu" else "gloo"
        dist.init_process_group(backend, timeout=PROCESS_GROUP_TIMEOUT)


def end_process_group(env: DistEnv) -> None:
    """Leave the process group this run joined (a no-op for one process)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(spec: str, env: DistEnv) -> torch.device:
    """This rank's device (see :func:`model.device.resolve_device`), made current on CUDA."""
    try:
        device = model_device.resolve_device(spec, env.local_rank)
    except DeviceError as exc:
        raise TrainingError(str(exc)) from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def distributed_model(net: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """``net`` itself for one process, wrapped in DistributedDataParallel under ``torchrun``."""
    if not env.distributed:
        return net
    ids = [device.index] if device.type == "cuda" else None
    # a phase that weights a loss 0 leaves its head without gradients
    return nn.parallel.DistributedDataParallel(net, device_ids=ids, find_unused_parameters=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(env: DistEnv) -> None:
    """Wait for every rank (a no-op for one process)."""
    if env.distributed:
        dist.barrier()


def rank0_flag(env: DistEnv, device: torch.device, flag: bool) -> bool:
    """Rank 0's value of ``flag`` on every rank, so that all ranks take the same branch."""
    if not env.distributed:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def finite_on_every_rank(env: DistEnv, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank (all ranks must skip a step together)."""
    finite = torch.isfinite(loss.detach()).to(torch.int32)
    if env.distributed:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())
