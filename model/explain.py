"""Which regions carry a similarity score or a predicted class: the token-gradient norm.

For a scalar the network computes from an image — the cosine similarity of its embedding
with a case's, or the logit of a class — the relevance of each patch token of every
scale is the L2 norm of the gradient of that scalar with respect to the token: how much
the scalar moves when the token's content changes (the gradient saliency map of
Simonyan et al. 2014, "Deep inside convolutional networks", taken at the tokens of a
transformer rather than at the pixels, as Chefer et al. 2021, "Transformer
interpretability beyond attention visualization", do for their relevance).

Maps from every scale are folded onto the finest grid (level 0: one cell per
``patch_size`` pixels of the canvas): a token of level ``l`` covers ``2**l`` × ``2**l``
finest cells, and adds its relevance to each of them. The map is divided by its maximum,
so values lie in [0, 1] (all zeros when the scalar does not depend on the image). A
similarity is explained on both sides: the query's map with the case's embedding fixed,
and the other way round. When the index version centres its vectors (``centre``: the
mean it stores), the scalar is the cosine the service ranks by: of the unit embeddings
moved by ``-centre`` and renormalised.

Why the norm and not gradient × input (the token times its gradient, this module's
first method): on a generated task whose class is decided by one coloured square, the
gradient × input map of an accurate model peaked on the square for 0.09–0.54 of the
canvases, and hardly more without clipping its negative values; the gradient norm peaked
there for 0.54–1.00 (docs/results.md). So the loss comes from multiplying by the token,
which weighs each region by its own embedding as well (why that hides the pattern was
not looked into further).

Limits: the norm is unsigned — it says where the score is sensitive, not whether a region
raises or lowers it, so the map of a class hardly depends on which class is asked for
(where the decision looks, not what it decides); it is first-order (a region can matter
through interactions the gradient does not show); the grid is as coarse as the patches
(16 px of a 96 or 224 px canvas); the map explains the model, not the diagnosis. For the
hybrid ViT (``stem="efficientnet_lite0"``) a token is a cell of the convolutional stem's
feature map, whose receptive field spans much of the canvas: its map says which token
carried the score, placed at the cell's 16 px, so it is less local than the plain ViT's.
The computation runs in float32 without autocast and is deterministic for a given model
and input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from imaging.preprocessing import PreprocessConfig, normalise
from model.vit import MultiScaleViT

METHOD = "token-gradient norm, all scales folded onto the finest grid"


@dataclass(frozen=True)
class SimilarityExplanation:
    query_map: np.ndarray  # (rows, cols) float32 in [0, 1], over the query's canvas
    case_map: np.ndarray  # (rows, cols) float32 in [0, 1], over the case's canvas
    score: float  # the cosine similarity explained
    class_map: np.ndarray | None = None  # the query's map for ``class_index``, if asked
    method: str = METHOD


def _tokens_of(
    network: MultiScaleViT,
    canvases: torch.Tensor,
    preprocessing: PreprocessConfig,
    device: torch.device,
) -> list[torch.Tensor]:
    """The patch tokens of every scale of uint8 canvases (B, 3, H, W), as leaves that
    gradients are taken with respect to."""
    x = normalise(canvases.to(device), preprocessing)
    with torch.no_grad():
        return [t.detach().requires_grad_(True) for t in network.scale_tokens(x)]


def _grid_of(
    grads: tuple[torch.Tensor, ...],
    index: int,
    canvas_size: torch.Size,
    patch_size: int,
) -> np.ndarray:
    """The gradient norm of sample `index`, per token of every scale, on the finest grid."""
    per_scale = [g[index].norm(dim=-1).detach() for g in grads]
    return fold_scales(per_scale, canvas_size, patch_size)


def fold_scales(
    per_scale: list[torch.Tensor], canvas_size: tuple[int, int] | torch.Size, patch_size: int
) -> np.ndarray:
    """Per-scale token relevances (n_l,) → one (rows, cols) map in [0, 1] (module text);
    a negative value (none comes from a norm) counts as 0."""
    rows, cols = int(canvas_size[0]) // patch_size, int(canvas_size[1]) // patch_size
    total = torch.zeros(rows, cols, dtype=torch.float32)
    height, width = int(canvas_size[0]), int(canvas_size[1])
    for level, relevance in enumerate(per_scale):
        h_l, w_l = (height >> level) // patch_size, (width >> level) // patch_size
        grid = relevance.float().cpu().reshape(h_l, w_l)
        spread = grid.repeat_interleave(2**level, 0).repeat_interleave(2**level, 1)
        total[: spread.shape[0], : spread.shape[1]] += spread[:rows, :cols]
    total.clamp_(min=0)
    peak = float(total.max())
    if peak > 0:
        total /= peak
    return total.numpy()


def explain_similarity(
    network: MultiScaleViT,
    query_canvas: torch.Tensor,
    case_canvas: torch.Tensor,
    preprocessing: PreprocessConfig,
    device: torch.device,
    *,
    class_index: int | None = None,
    centre: np.ndarray | None = None,
) -> SimilarityExplanation:
    """Maps of the query and the case (uint8 (3, H, W) canvases) for their cosine score
    (centred on ``centre`` when given, as the index version searches), and, with
    ``class_index``, the query's map for that class's logit.

    One forward of the pair as a batch of two, and one backward of
    ``e_q · sg(e_c) + e_c · sg(e_q)`` (``sg``: no gradient), which gives each side's
    gradient of the score with the other side held fixed; the class map takes one more
    backward through the same graph.
    """
    was_training = network.training
    network.eval()
    try:
        with torch.enable_grad():
            pair = torch.stack([query_canvas, case_canvas])
            tokens = _tokens_of(network, pair, preprocessing, device)
            embedding = network.embed_head(network.features_from_tokens(tokens))  # (2, E)
            unit = nn.functional.normalize(embedding.float(), dim=-1)
            if centre is not None:  # (E,): the index version's mean of unit embeddings
                shift = torch.as_tensor(centre, dtype=torch.float32, device=unit.device)
                unit = nn.functional.normalize(unit - shift, dim=-1)
            query, case = unit[0], unit[1]
            target = (query * case.detach()).sum() + (case * query.detach()).sum()
            grads = torch.autograd.grad(target, tokens, retain_graph=class_index is not None)
            class_grads = None
            if class_index is not None:
                logit = network.classifier(embedding)[0, class_index]
                class_grads = torch.autograd.grad(logit, tokens)
    finally:
        network.train(was_training)
    size, patch = query_canvas.shape[-2:], network.cfg.patch_size
    return SimilarityExplanation(
        query_map=_grid_of(grads, 0, size, patch),
        case_map=_grid_of(grads, 1, case_canvas.shape[-2:], patch),
        score=float((query * case).sum().detach()),
        class_map=None if class_grads is None else _grid_of(class_grads, 0, size, patch),
    )


def explain_class(
    network: MultiScaleViT,
    canvas: torch.Tensor,
    preprocessing: PreprocessConfig,
    device: torch.device,
    class_index: int,
) -> np.ndarray:
    """The map of what drives the logit of ``class_index`` for one uint8 (3, H, W) canvas."""
    was_training = network.training
    network.eval()
    try:
        with torch.enable_grad():
            tokens = _tokens_of(network, canvas.unsqueeze(0), preprocessing, device)
            embedding = network.embed_head(network.features_from_tokens(tokens))
            grads = torch.autograd.grad(network.classifier(embedding)[0, class_index], tokens)
    finally:
        network.train(was_training)
    return _grid_of(grads, 0, canvas.shape[-2:], network.cfg.patch_size)
