"""Start from ImageNet-pretrained plain ViT/16 weights (``vit_*_patch16_224`` layout).

Such a state dict (safetensors, or a ``.pth``/``.pt``/``.bin`` pickle read with
``weights_only=True``) maps onto :class:`model.vit.MultiScaleViT` as follows:

* ``patch_embed.proj``, every ``blocks.N.*`` and the final ``norm`` load unchanged. A
  pretrained model deeper than ours contributes its first ``depth`` blocks (for the
  reduced-depth CPU recipes); a shallower one is an error.
* ``pos_embed`` is the positional *table*: its class-token entry (when present) is folded
  into ``cls_token``, and its G×G patch entries become the spatial grid of our 3-D
  encoding, resized bicubically when our grid differs (e.g. 14×14 → 8×8 for 128 px
  inputs). Because the grid is sampled at each patch's normalised centre, the full-
  resolution scale then reproduces the pretrained encoding exactly.
* The per-scale table, the embedding head and the classifier have no pretrained
  counterpart and keep their fresh initialisation; the pretrained ``head``/``fc_norm``
  are dropped.
* Anything else inside the blocks (layer scale, q/k norms of newer variants) would change
  the computation and is refused rather than silently ignored.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file

from model.vit import MultiScaleViT

log = logging.getLogger(__name__)

_PREFIXES = ("module.", "model.", "backbone.", "encoder.")
_DROPPED = re.compile(r"^(head|head_drop|fc_norm|pre_logits|dist_token|head_dist)(\.|$)")


class PretrainedWeightsError(ValueError):
    """Weights that cannot initialise this network."""


@dataclass(frozen=True)
class PretrainedReport:
    loaded: tuple[str, ...]  # our parameter names that received pretrained values
    dropped: tuple[str, ...]  # pretrained keys not used (classifier head, extra blocks)
    fresh: tuple[str, ...]  # our parameters left at their initialisation


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a torch pickle, unwrapped and de-prefixed."""
    file = Path(path)
    if not file.is_file():
        raise PretrainedWeightsError(f"no weights file at {file}")
    try:
        if file.suffix == ".safetensors":
            state: object = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # the readers raise many types on a bad file
        raise PretrainedWeightsError(f"cannot read weights from {file}: {exc}") from exc
    for wrapper in ("model", "state_dict", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{file} does not hold a state dict of tensors")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        cleaned[str(key)] = value
    return cleaned


def resize_grid(table: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, D, h, w) positional grid → (1, D, *size), bicubic."""
    if tuple(table.shape[-2:]) == size:
        return table
    return F.interpolate(table.float(), size=size, mode="bicubic", align_corners=False)


def map_vit_state_dict(
    state: dict[str, torch.Tensor], model: MultiScaleViT
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Translate a plain-ViT state dict to ours: (our tensors, pretrained keys dropped)."""
    ours = model.state_dict()
    cfg = model.cfg
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key in ("patch_embed.proj.weight", "cls_token", "pos_embed"):
        if key not in state:
            raise PretrainedWeightsError(f"not a ViT state dict: {key!r} is missing")
    width = state["cls_token"].shape[-1]
    if width != cfg.width:
        raise PretrainedWeightsError(
            f"pretrained width {width} does not match the model's {cfg.width} "
            f"(variant {cfg.variant!r}); pick the matching variant"
        )
    proj = state["patch_embed.proj.weight"]
    if tuple(proj.shape) != tuple(ours["patch_embed.proj.weight"].shape):
        raise PretrainedWeightsError(
            f"patch embedding {tuple(proj.shape)} does not fit "
            f"{tuple(ours['patch_embed.proj.weight'].shape)} (patch size or channels differ)"
        )

    pos = state["pos_embed"].reshape(-1, width)  # (prefix + G*G, D)
    side = round((pos.shape[0] - 1) ** 0.5)
    if side * side == pos.shape[0] - 1:
        prefix = 1
    else:
        side = round(pos.shape[0] ** 0.5)
        prefix = 0
        if side * side != pos.shape[0]:
            raise PretrainedWeightsError(
                f"pos_embed with {pos.shape[0]} entries is neither G² nor 1 + G²"
            )
    cls = state["cls_token"].reshape(1, 1, width).clone()
    if prefix:
        cls += pos[0].reshape(1, 1, width)
    mapped["cls_token"] = cls
    grid = pos[prefix:].reshape(1, side, side, width).permute(0, 3, 1, 2)  # (1, D, G, G)
    mapped["pos.grid"] = resize_grid(grid, cfg.grid_size)

    block_keys = [k for k in state if k.startswith("blocks.")]
    depth = 1 + max((int(k.split(".")[1]) for k in block_keys), default=-1)
    if depth < cfg.depth:
        raise PretrainedWeightsError(
            f"pretrained model has {depth} blocks, the model needs {cfg.depth}"
        )
    for key, value in state.items():
        if key in ("cls_token", "pos_embed"):
            continue
        if key.startswith("blocks.") and int(key.split(".")[1]) >= cfg.depth:
            dropped.append(key)
            continue
        if _DROPPED.match(key):
            dropped.append(key)
            continue
        if key not in ours:
            raise PretrainedWeightsError(
                f"pretrained key {key!r} has no counterpart in this architecture"
            )
        if tuple(value.shape) != tuple(ours[key].shape):
            raise PretrainedWeightsError(
                f"{key}: pretrained shape {tuple(value.shape)} vs model {tuple(ours[key].shape)}"
            )
        mapped[key] = value
    return mapped, dropped


def load_pretrained_vit(model: MultiScaleViT, path: str | os.PathLike[str]) -> PretrainedReport:
    """Initialise ``model`` in place from a plain ViT/16 checkpoint; see the module doc."""
    mapped, dropped = map_vit_state_dict(read_state_dict(path), model)
    with torch.no_grad():
        params = model.state_dict()
        for key, value in mapped.items():
            params[key].copy_(value.to(params[key].dtype))
    fresh = tuple(sorted(set(params) - set(mapped)))
    report = PretrainedReport(tuple(sorted(mapped)), tuple(sorted(dropped)), fresh)
    log.info(
        "pretrained ViT weights from %s: %d tensors loaded, %d dropped, %d fresh",
        path,
        len(report.loaded),
        len(report.dropped),
        len(report.fresh),
    )
    return report
