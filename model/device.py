"""Where the network runs: device names from the command line, and bf16 autocast.

Shared by training, indexing and serving so that ``--device`` means the same everywhere
and the model computes in the same precision wherever it embeds.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


class DeviceError(ValueError):
    """A device that does not exist here or is not supported."""


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """'auto' → this rank's GPU when there is one, else the CPU; checks what was asked for.

    ``cuda`` without an index means the GPU of this process's ``local_rank`` (torchrun).
    """
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"device {spec!r} is not supported: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} was asked for but no GPU is visible")
        count = torch.cuda.device_count()
        if device.index is None:
            device = torch.device("cuda", local_rank % count)
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {spec!r}: only {count} GPU(s) are visible")
    return device


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when asked for; full precision otherwise (and on the CPU)."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
