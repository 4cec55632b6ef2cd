"""Which regions raise a similarity score or a predicted class: integrated gradients on
the patch tokens.

For a scalar the network computes from an image — the cosine similarity of its embedding
with a case's, or the logit of a class — each patch token of every scale gets the
integrated-gradients attribution of Sundararajan et al. 2017 ("Axiomatic attribution for
deep networks"), taken at the tokens entering the encoder (patch embedding + position +
scale level) rather than at the pixels, as Chefer et al. 2021 ("Transformer
interpretability beyond attention visualization") take theirs: the token's offset from
the baseline times the gradient of the scalar averaged along the straight path from the
baseline to the tokens, summed over the width. The baseline replaces every token of a
scale by that scale's mean token, content and position averaged alike. The gradient is
taken at ``STEPS`` points of the path (the midpoint rule: α = ¼ and ¾ for 2). With
enough points the attributions of all tokens add up to the scalar minus its value at
the baseline (checked through ``explain_similarity`` at 64 points by the tests); at 2
they do not (off by a median 69 %, 6–168 %, on the test's model): the map ranks
regions, it does not decompose the score. Divided by its maximum, a map has full
contrast even when the score hardly differs from the baseline's. Each canvas's tokens
are computed once, and the encoder runs over its path points as one batch.

What an explanation costs (docs/benchmarks.md) is cut where the maths allows: the
query's side (:class:`QueryExplainer`: its path through the encoder, the graph kept) is
built once for all the cases it is compared with; its real embedding can be the one
``POST /query`` already computed; the query's and each case's paths are separate graphs,
so the class map's backward runs through the query's path only.

Maps from every scale are folded onto the finest grid (level 0: one cell per
``patch_size`` pixels of the canvas): a token of level ``l`` covers ``2**l`` × ``2**l``
finest cells, and adds its attribution to each of them. Negative attribution (a region
that lowers the scalar) is set to 0, and the map is divided by its maximum, so values lie
in [0, 1] (all zeros when no region raises the scalar above the baseline's). A
similarity is explained on both sides: the query's map with the case's embedding fixed,
and the other way round. When the index version centres its vectors (``centre``: the
mean it stores), the scalar is the cosine the service ranks by: of the unit embeddings
moved by ``-centre`` and renormalised.

Why this method: on a generated task whose class is decided by one coloured square
(docs/results.md), the two one-pass methods served before each failed one check. Gradient
× input (the token times its gradient, no path) told classes apart but peaked on the
square for only 0.09–0.54 of the canvases; the gradient norm found the square on seven
training seeds of eight but, unsigned, drew the same map whatever class was asked for.

Limits: first-order along one path (regions that matter only together can be misstated);
the baseline is a choice (another baseline gives other maps); ``STEPS`` points are a
coarse integral, chosen for cost (docs/benchmarks.md); the grid is as coarse as the
patches (16 px of a 96 or 224 px canvas); the map explains the model, not the diagnosis.
For the hybrid ViT (``stem="efficientnet_lite0"``) a token is a cell of the
convolutional stem's feature map, whose receptive field spans much of the canvas: its
map says which token carried the score, placed at the cell's 16 px, so it is less local
than the plain ViT's. The computation runs in float32 without autocast and is
deterministic for a given model and input (a ``query_embedding`` passed in is taken as it
is: on CUDA the service's comes from its bf16 forward).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from imaging.preprocessing import PreprocessConfig, normalise
from model.vit import MultiScaleViT

STEPS = 2  # points on the path from the baseline to the tokens (module text)


def method_name(steps: int = STEPS) -> str:
    """The method's name in answers, with its number of steps."""
    return (
        f"integrated gradients on the tokens ({steps} steps from each scale's mean token), "
        "all scales folded onto the finest grid"
    )


METHOD = method_name()


@dataclass(frozen=True)
class SimilarityExplanation:
    query_map: np.ndarray  # (rows, cols) float32 in [0, 1], over the query's canvas
    case_map: np.ndarray  # (rows, cols) float32 in [0, 1], over the case's canvas
    score: float  # the cosine similarity explained
    class_map: np.ndarray | None = None  # the query's map for ``class_index``, if asked
    method: str = METHOD


def tokens_of(
    network: MultiScaleViT,
    canvases: torch.Tensor,
    preprocessing: PreprocessConfig,
    device: torch.device,
) -> list[torch.Tensor]:
    """The patch tokens of every scale of uint8 canvases (B, 3, H, W), without a graph."""
    x = normalise(canvases.to(device), preprocessing)
    with torch.no_grad():
        return [t.detach() for t in network.scale_tokens(x)]


@dataclass(frozen=True)
class IntegrationPath:
    """The integration path of a batch of B canvases: ``points`` per scale, (B·steps, n_l,
    D) leaves for the gradients (sample b's step k at row b·steps + k, at α = (k + ½) /
    steps: the midpoint rule), and ``offsets`` per scale, (B, n_l, D): each token minus
    its scale's mean token (the baseline)."""

    points: list[torch.Tensor]
    offsets: list[torch.Tensor]
    steps: int

    @classmethod
    def of(cls, tokens: list[torch.Tensor], steps: int) -> IntegrationPath:
        if steps < 1:
            raise ValueError(f"integrated gradients need at least 1 step, got {steps}")
        points, offsets = [], []
        for scale in tokens:
            batch, count, width = scale.shape
            alphas = (torch.arange(steps, dtype=scale.dtype, device=scale.device) + 0.5) / steps
            base = scale.mean(dim=1, keepdim=True)  # (B, 1, D)
            offset = scale - base
            on_path = base.unsqueeze(1) + alphas.view(1, steps, 1, 1) * offset.unsqueeze(1)
            points.append(on_path.reshape(batch * steps, count, width).requires_grad_(True))
            offsets.append(offset)
        return cls(points, offsets, steps)

    def attributions(self, grads: tuple[torch.Tensor, ...], index: int) -> list[torch.Tensor]:
        """Sample ``index``'s attribution per token of every scale, (n_l,) each: its offset
        times the gradient averaged along the path (signed, not folded)."""
        return [
            (g.reshape(-1, self.steps, *g.shape[1:])[index].mean(0) * offset[index])
            .sum(-1)
            .detach()
            for g, offset in zip(grads, self.offsets, strict=True)
        ]

    def grid(
        self, grads: tuple[torch.Tensor, ...], index: int, canvas_size: torch.Size, patch_size: int
    ) -> np.ndarray:
        """Sample ``index``'s attributions folded onto the finest grid (:func:`fold_scales`)."""
        return fold_scales(self.attributions(grads, index), canvas_size, patch_size)


def fold_scales(
    per_scale: list[torch.Tensor], canvas_size: tuple[int, int] | torch.Size, patch_size: int
) -> np.ndarray:
    """Per-scale token attributions (n_l,) → one (rows, cols) map in [0, 1] (module text):
    added up on the finest cells, negatives set to 0, divided by the maximum."""
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


def _unit(embedding: torch.Tensor, centre: np.ndarray | None) -> torch.Tensor:
    """Embeddings as the index version compares them: unit length, and when it centres
    (``centre``: its stored mean of unit embeddings) moved by ``-centre`` and renormalised."""
    unit = nn.functional.normalize(embedding.float(), dim=-1)
    if centre is None:
        return unit
    shift = torch.as_tensor(centre, dtype=torch.float32, device=unit.device)
    return nn.functional.normalize(unit - shift, dim=-1)


@dataclass(frozen=True)
class _Side:
    """One canvas's integration path with its graph, and its real embedding."""

    path: IntegrationPath
    raw: torch.Tensor  # (steps, E) the heads' embeddings along the path, with the graph
    unit: torch.Tensor  # (steps, E) the same, as the index version compares them
    fixed: torch.Tensor  # (E,) the real embedding, compared so, without a graph


def _side(
    network: MultiScaleViT,
    canvas: torch.Tensor,
    preprocessing: PreprocessConfig,
    device: torch.device,
    centre: np.ndarray | None,
    steps: int,
    embedding: torch.Tensor | np.ndarray | None = None,
) -> _Side:
    tokens = tokens_of(network, canvas.unsqueeze(0), preprocessing, device)
    if embedding is None:
        with torch.no_grad():
            embedding = network.embed_head(network.features_from_tokens(tokens))[0]
    fixed = _unit(torch.as_tensor(embedding, dtype=torch.float32, device=device), centre)
    path = IntegrationPath.of(tokens, steps)
    raw = network.embed_head(network.features_from_tokens(path.points))
    return _Side(path, raw, _unit(raw, centre), fixed.detach())


class QueryExplainer:
    """The query's side of its explanations, prepared once: its tokens, its integration
    path through the encoder (the graph kept) and its real embedding. Then each case costs
    its own side and one backward through both paths (:meth:`similarity`), and the class
    map one backward through the query's path alone (:meth:`class_map`).

    ``query_embedding``: the query's embedding as ``POST /query`` computed it (unit length,
    not centred), which spares an encoder pass and makes the query's side of the score
    explained the one ranked; by default it is computed from the canvas. Use it inside
    :func:`explaining`, which holds the network in eval mode.
    """

    def __init__(
        self,
        network: MultiScaleViT,
        query_canvas: torch.Tensor,
        preprocessing: PreprocessConfig,
        device: torch.device,
        *,
        centre: np.ndarray | None = None,
        steps: int = STEPS,
        query_embedding: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        if network.training:
            raise RuntimeError("explanations are of the network in eval mode (explaining())")
        self.network, self.preprocessing, self.device = network, preprocessing, device
        self.centre, self.steps = centre, steps
        self.size = query_canvas.shape[-2:]
        with torch.enable_grad():
            self.query = _side(
                network, query_canvas, preprocessing, device, centre, steps, query_embedding
            )

    def similarity(self, case_canvas: torch.Tensor) -> SimilarityExplanation:
        """Both maps of the query and one case (uint8 (3, H, W)) for their cosine score:
        one backward of ``Σ_k e_q(k) · e_c + e_c(k) · e_q`` (``e(k)``: the embedding at
        step k of a side's path) gives each side's gradients with the other side fixed."""
        query, patch = self.query, self.network.cfg.patch_size
        with torch.enable_grad():
            case = _side(
                self.network, case_canvas, self.preprocessing, self.device, self.centre, self.steps
            )
            target = (query.unit @ case.fixed).sum() + (case.unit @ query.fixed).sum()
            grads = torch.autograd.grad(
                target, [*query.path.points, *case.path.points], retain_graph=True
            )
        scales = len(query.path.points)
        return SimilarityExplanation(
            query_map=query.path.grid(grads[:scales], 0, self.size, patch),
            case_map=case.path.grid(grads[scales:], 0, case_canvas.shape[-2:], patch),
            score=float(query.fixed @ case.fixed),
            method=method_name(self.steps),
        )

    def class_map(self, class_index: int) -> np.ndarray:
        """The query's map for the logit of ``class_index``, through the kept path."""
        query = self.query
        with torch.enable_grad():
            logits = self.network.classifier(query.raw)
            grads = torch.autograd.grad(
                logits[:, class_index].sum(), query.path.points, retain_graph=True
            )
        return query.path.grid(grads, 0, self.size, self.network.cfg.patch_size)


@contextmanager
def explaining(network: nn.Module) -> Iterator[None]:
    """Hold ``network`` in eval mode (explanations are of the network as it serves)."""
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)


def explain_similarity(
    network: MultiScaleViT,
    query_canvas: torch.Tensor,
    case_canvas: torch.Tensor,
    preprocessing: PreprocessConfig,
    device: torch.device,
    *,
    class_index: int | None = None,
    centre: np.ndarray | None = None,
    steps: int = STEPS,
    query_embedding: torch.Tensor | np.ndarray | None = None,
) -> SimilarityExplanation:
    """Maps of the query and the case (uint8 (3, H, W) canvases) for their cosine score
    (centred on ``centre`` when given, as the index version searches), and, with
    ``class_index``, the query's map for that class's logit (:class:`QueryExplainer`)."""
    with explaining(network):
        explainer = QueryExplainer(
            network,
            query_canvas,
            preprocessing,
            device,
            centre=centre,
            steps=steps,
            query_embedding=query_embedding,
        )
        found = explainer.similarity(case_canvas)
        if class_index is None:
            return found
        return replace(found, class_map=explainer.class_map(class_index))


def explain_class(
    network: MultiScaleViT,
    canvas: torch.Tensor,
    preprocessing: PreprocessConfig,
    device: torch.device,
    class_index: int,
    *,
    steps: int = STEPS,
) -> np.ndarray:
    """The map of what raises the logit of ``class_index`` for one uint8 (3, H, W) canvas."""
    with explaining(network), torch.enable_grad():
        path = IntegrationPath.of(
            tokens_of(network, canvas.unsqueeze(0), preprocessing, device), steps
        )
        embedding = network.embed_head(network.features_from_tokens(path.points))
        logits = network.classifier(embedding)[:, class_index]
        grads = torch.autograd.grad(logits.sum(), path.points)
    return path.grid(grads, 0, canvas.shape[-2:], network.cfg.patch_size)
