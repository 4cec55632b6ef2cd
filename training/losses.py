"""The dynamic multi-loss (docs/training.md): cross-entropy, contrastive, triplet, distillation.

``total = W_ce·L_ce + W_contrastive·L_contrastive + W_triplet·L_triplet (+ W_distill·L_distill
+ W_geometry·L_geometry)``;
the weights change from phase to phase (:mod:`training.schedule`).

Decisions
---------
* **Positive pairs.** One-label data: same class. Multi-label data: the two images share at
  least one finding. Images with *no* finding (an all-zero multi-hot row, ChestX-ray14's
  "No Finding") are positives of each other — "normal" is treated as one more class, so the
  metric losses pull normal studies together, which is what a clinician retrieving look-alike
  normals expects. A normal image and an abnormal one are a negative pair. An image is never
  its own positive or negative (the diagonal is False in both masks). Multi-hot targets are
  read as ``target > 0.5`` so label-smoothed or soft targets still define pairs.
* **Distances** are Euclidean between the embeddings, always computed in float32 with autocast
  switched off (bf16 distances between unit vectors lose most of their precision), through
  the Gram matrix ``d² = |a|² + |b|² − 2·a·b``, clamped at 0; ``d = sqrt(max(d², 1e-12))`` so
  the gradient stays finite for identical embeddings. The model's embeddings are unit-norm,
  so ``d ∈ [0, 2]`` and the default margins (0.5 contrastive, 0.2 triplet) are on that scale.
* **Contrastive** (Hadsell, Chopra & LeCun 2006) over every ordered in-batch pair: positives
  ``d²``, negatives ``max(0, m − d)²``. The positive and negative terms are averaged
  *separately* and then summed, so a batch with many more negative than positive pairs is not
  dominated by the negatives; a term with no pairs contributes 0.
* **Triplet** (Schroff et al. 2015, FaceNet) with in-batch mining, ``max(0, d_ap − d_an + m)``.
  ``"semihard"``: every anchor-positive pair is paired with the hardest negative that is farther
  than the positive but within the margin (``d_ap < d_an < d_ap + m``); when the anchor has no
  such negative it falls back to its hardest (closest) negative. ``"hard"``: batch-hard
  (Hermans et al. 2017) — per anchor, its farthest positive and its closest negative. The
  mean is over all valid triplets (anchor with at least one positive and one negative),
  including those whose loss is already 0. Negatives are chosen without gradient; the
  gradient flows through the chosen distances.
* **Classification.** Cross-entropy (softmax) for one-label data; binary cross-entropy with
  logits (per-class sigmoid) for multi-label data. ``class_weights`` are CE's per-class
  ``weight`` for one-label data and BCE's ``pos_weight`` (the weight of the positive term of
  each class) for multi-label data; :func:`balanced_class_weights` makes the right kind for
  each task. Label smoothing in the multi-label case moves targets to ``ε/2`` and ``1 − ε/2``.
* **Distillation** (Hinton et al. 2015): one-label ``KL(softmax(t/T) ‖ softmax(s/T))·T²``;
  multi-label: BCE of ``s/T`` against ``sigmoid(t/T)``, ``·T²`` (the same gradient as the
  per-class Bernoulli KL; the value has the teacher's entropy as its floor, not 0). The teacher's
  logits are detached.
  ``hard`` distillation (DeiT, Touvron et al. 2021) takes the teacher's decision instead:
  cross-entropy against its arg-max class (one-label), BCE against its ``sigmoid > 0.5``
  findings (multi-label), without temperature.
* **Geometry** distillation: the student's in-batch similarity structure is matched to the
  teacher's, so that retrieval and not only the classifier learns from the teacher. For
  each image of the batch, the softmax over its cosine similarities to the *other* images
  at temperature τ (``geometry_temperature``, 0.1) is computed for both networks, and the
  loss is ``KL(teacher ‖ student)`` averaged over the rows (the relational distillation of
  SEED, Fang et al. 2021, and CompRess, Abbasi Koohpayegani et al. 2020, within a batch).
  The teacher's embeddings arrive centred on their training mean and renormalised
  (training/teacher.py): a fine-tuned CNN's embeddings share one direction, and their raw
  cosines would all be near 1.
* Every loss works under bf16 autocast (inputs are cast to float32), on CPU and CUDA, and
  returns a scalar still attached to the graph even when it is 0 (``embeddings.sum() * 0``),
  so DDP always sees every parameter used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from labels import Task
from model.vit import ModelOutput

MINING_STRATEGIES: tuple[str, ...] = ("semihard", "hard")
_EPS = 1e-12  # floor of d² before the square root


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss parts; all non-negative and at least one positive."""

    ce: float
    contrastive: float
    triplet: float
    distill: float = 0.0
    geometry: float = 0.0

    def __post_init__(self) -> None:
        values = (self.ce, self.contrastive, self.triplet, self.distill, self.geometry)
        if any(v < 0 for v in values):
            raise ValueError(f"loss weights must be non-negative, got {self}")
        if not any(v > 0 for v in values):
            raise ValueError("at least one loss weight must be positive")

    def as_dict(self) -> dict[str, float]:
        return {
            "ce": self.ce,
            "contrastive": self.contrastive,
            "triplet": self.triplet,
            "distill": self.distill,
            "geometry": self.geometry,
        }


# ---------------------------------------------------------------------------- pairs


def positive_mask(targets: torch.Tensor, task: Task) -> torch.Tensor:
    """(B, B) bool: ``[i, j]`` is True when images i ≠ j are a positive pair.

    One-label ``targets`` are class indices (B,); multi-label ones are multi-hot (B, C): a
    positive pair shares a finding, or both images have no finding at all ("No Finding").
    """
    batch = targets.shape[0]
    eye = torch.eye(batch, dtype=torch.bool, device=targets.device)  # (B, B)
    if task is Task.MULTI_LABEL:
        if targets.dim() != 2:
            raise ValueError(f"multi-label targets must be (B, C), got {tuple(targets.shape)}")
        hot = (targets > 0.5).float()  # (B, C)
        shared = (hot @ hot.T) > 0  # (B, B): at least one finding in common
        normal = hot.sum(dim=1) == 0  # (B,): no finding
        same = shared | (normal[:, None] & normal[None, :])  # (B, B)
    else:
        if targets.dim() != 1:
            raise ValueError(f"one-label targets must be (B,), got {tuple(targets.shape)}")
        same = targets[:, None] == targets[None, :]  # (B, B)
    return same & ~eye


def negative_mask(targets: torch.Tensor, task: Task) -> torch.Tensor:
    """(B, B) bool: neither a positive pair nor an image with itself."""
    batch = targets.shape[0]
    eye = torch.eye(batch, dtype=torch.bool, device=targets.device)  # (B, B)
    return ~positive_mask(targets, task) & ~eye


def pairwise_sq_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, E) → (B, B) squared Euclidean distances in float32, clamped at 0, autocast off."""
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        x = embeddings.float()  # (B, E)
        sq = (x * x).sum(dim=1)  # (B,)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)  # (B, B)
        return d2.clamp_min(0.0)


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, E) → (B, B) Euclidean distances in float32 with a finite gradient at 0."""
    return pairwise_sq_distances(embeddings).clamp_min(_EPS).sqrt()  # (B, B)


def _zero(embeddings: torch.Tensor) -> torch.Tensor:
    """A float32 zero attached to the graph (so every parameter still receives a gradient)."""
    return embeddings.float().sum() * 0.0


# ---------------------------------------------------------------------------- losses


def classification_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    task: Task,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy (one-label, ``class_weights`` = CE ``weight``) or BCE-with-logits
    (multi-label, ``class_weights`` = ``pos_weight``), mean over the batch, in float32."""
    logits32 = logits.float()  # (B, C)
    weights = None if class_weights is None else class_weights.to(logits32.device).float()
    if task is Task.MULTI_LABEL:
        soft = targets.float()  # (B, C)
        if label_smoothing > 0:
            soft = soft * (1.0 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits32, soft, pos_weight=weights)
    return F.cross_entropy(
        logits32, targets.long(), weight=weights, label_smoothing=label_smoothing
    )


def contrastive_loss(
    embeddings: torch.Tensor, targets: torch.Tensor, task: Task, margin: float = 0.5
) -> torch.Tensor:
    """Hadsell et al. 2006: mean ``d²`` over positive pairs + mean ``max(0, m − d)²`` over
    negative pairs (each term 0 when the batch has no such pair)."""
    pos = positive_mask(targets, task)  # (B, B)
    neg = negative_mask(targets, task)  # (B, B)
    d2 = pairwise_sq_distances(embeddings)  # (B, B)
    loss = _zero(embeddings)
    if pos.any():
        loss = loss + d2[pos].mean()
    if neg.any():
        d = d2[neg].clamp_min(_EPS).sqrt()  # (n_neg,)
        loss = loss + F.relu(margin - d).pow(2).mean()
    return loss


def triplet_loss(
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    task: Task,
    margin: float = 0.2,
    mining: str = "semihard",
) -> torch.Tensor:
    """FaceNet triplet loss ``max(0, d_ap − d_an + m)`` with in-batch ``"semihard"`` or
    ``"hard"`` (batch-hard) mining; mean over valid triplets, attached 0 when there are none."""
    if mining not in MINING_STRATEGIES:
        raise ValueError(f"unknown mining {mining!r}; choose one of {MINING_STRATEGIES}")
    pos = positive_mask(targets, task)  # (B, B)
    neg = negative_mask(targets, task)  # (B, B)
    d = pairwise_distances(embeddings)  # (B, B)
    has_neg = neg.any(dim=1)  # (B,)
    inf = float("inf")

    if mining == "hard":
        valid = pos.any(dim=1) & has_neg  # (B,): anchors with a positive and a negative
        if not valid.any():
            return _zero(embeddings)
        with torch.no_grad():
            p_idx = d.masked_fill(~pos, -1.0).argmax(dim=1)  # (B,): farthest positive
            n_idx = d.masked_fill(~neg, inf).argmin(dim=1)  # (B,): closest negative
        d_ap = d.gather(1, p_idx[:, None]).squeeze(1)  # (B,)
        d_an = d.gather(1, n_idx[:, None]).squeeze(1)  # (B,)
        return F.relu(d_ap - d_an + margin)[valid].mean()

    valid_pairs = pos & has_neg[:, None]  # (B, B): anchor a, positive p
    if not valid_pairs.any():
        return _zero(embeddings)
    with torch.no_grad():
        d_ap = d[:, :, None]  # (B, B, 1): [a, p]
        d_an = d[:, None, :]  # (B, 1, B): [a, n]
        semi = neg[:, None, :] & (d_an > d_ap) & (d_an < d_ap + margin)  # (B, B, B)
        semi_idx = d_an.expand_as(semi).masked_fill(~semi, inf).argmin(dim=2)  # (B, B)
        hardest_idx = d.masked_fill(~neg, inf).argmin(dim=1)  # (B,)
        n_idx = torch.where(semi.any(dim=2), semi_idx, hardest_idx[:, None])  # (B, B)
    chosen_an = d.gather(1, n_idx)  # (B, B): d[a, n(a, p)]
    losses = F.relu(d - chosen_an + margin)  # (B, B): one triplet per (a, p)
    return losses[valid_pairs].mean()


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    task: Task,
    temperature: float = 4.0,
    hard: bool = False,
) -> torch.Tensor:
    """Hinton et al. 2015 knowledge distillation at temperature T, scaled by T²; or, with
    ``hard``, DeiT's hard-label distillation (the teacher's decision, no temperature)."""
    if hard:
        decided = teacher_logits.detach().float()
        if task is Task.MULTI_LABEL:
            return F.binary_cross_entropy_with_logits(student_logits.float(), (decided > 0).float())
        return F.cross_entropy(student_logits.float(), decided.argmax(dim=1))
    t = temperature
    student = student_logits.float() / t  # (B, C)
    teacher = teacher_logits.detach().float() / t  # (B, C)
    if task is Task.MULTI_LABEL:
        return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher)) * t * t
    log_p_student = F.log_softmax(student, dim=1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher, dim=1)  # (B, C)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * t * t


def geometry_loss(
    student_embeddings: torch.Tensor,
    teacher_embeddings: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """KL(teacher ‖ student) of each image's softmax over its similarities to the other
    images of the batch at ``temperature``, averaged over the batch (module doc)."""
    batch = student_embeddings.shape[0]
    if batch < 3:  # fewer than two others per row: no structure to match
        return student_embeddings.sum() * 0
    s = F.normalize(student_embeddings.float(), dim=1)
    t = F.normalize(teacher_embeddings.detach().float(), dim=1)
    off = ~torch.eye(batch, dtype=torch.bool, device=s.device)  # (B, B)
    sim_s = (s @ s.T)[off].view(batch, batch - 1) / temperature  # (B, B-1)
    sim_t = (t @ t.T)[off].view(batch, batch - 1) / temperature
    log_p_student = F.log_softmax(sim_s, dim=1)
    log_p_teacher = F.log_softmax(sim_t, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def balanced_class_weights(
    targets: np.ndarray | torch.Tensor, num_classes: int, task: Task
) -> torch.Tensor:
    """Per-class loss weights (num_classes,) float32 for :func:`classification_loss`.

    One-label (class indices): sklearn's ``"balanced"`` weights ``n / (C · count_c)``, i.e.
    inverse frequency normalised so that the *average weight of a training sample* is 1.
    A class absent from ``targets`` gets the neutral weight 1.

    Multi-label (multi-hot (N, C)): BCE ``pos_weight`` ``negatives_c / positives_c`` clipped to
    [1, 50] — rare findings get their positive term boosted (at most 50×), common ones are
    never down-weighted below 1. A finding with no positive example gets the cap, 50.
    """
    if isinstance(targets, torch.Tensor):
        t = targets.detach().cpu()
    else:
        t = torch.from_numpy(np.array(targets))  # a copy: read-only memmaps are fine
    if task is Task.MULTI_LABEL:
        hot = (t.float() > 0.5).float()  # (N, C)
        if hot.dim() != 2 or hot.shape[1] != num_classes:
            raise ValueError(
                f"multi-label targets must be (N, {num_classes}), got {tuple(hot.shape)}"
            )
        positives = hot.sum(dim=0)  # (C,)
        negatives = hot.shape[0] - positives  # (C,)
        ratio = negatives / positives.clamp_min(1e-12)  # (C,); 0 positives → huge → capped
        return ratio.clamp(1.0, 50.0).float()
    labels = t.long().flatten()  # (N,)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    counts = torch.bincount(labels, minlength=num_classes).float()  # (C,)
    weights = labels.numel() / (num_classes * counts.clamp_min(1.0))  # (C,)
    return torch.where(counts > 0, weights, torch.ones_like(weights)).float()


# ---------------------------------------------------------------------------- combined


@dataclass
class LossBreakdown:
    """The weighted total (backpropagate this) and the unweighted parts that were computed.

    ``parts`` holds keys among ``"ce"``, ``"contrastive"``, ``"triplet"``, ``"distill"``,
    ``"geometry"`` —
    only the parts whose weight was non-zero — detached, for logging.
    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor]


class MultiLoss(nn.Module):
    """The weighted sum of the loss parts for one task; the weights arrive with every call.

    A part whose weight is 0 is not computed (nor reported). ``class_weights`` is a buffer, so
    ``.to(device)`` moves it with the module.
    """

    class_weights: torch.Tensor | None

    def __init__(
        self,
        task: Task,
        *,
        contrastive_margin: float = 0.5,
        triplet_margin: float = 0.2,
        mining: str = "semihard",
        class_weights: torch.Tensor | None = None,
        temperature: float = 4.0,
        distill_hard: bool = False,
        geometry_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if mining not in MINING_STRATEGIES:
            raise ValueError(f"unknown mining {mining!r}; choose one of {MINING_STRATEGIES}")
        self.task = task
        self.contrastive_margin = contrastive_margin
        self.triplet_margin = triplet_margin
        self.mining = mining
        self.temperature = temperature
        self.distill_hard = distill_hard
        self.geometry_temperature = geometry_temperature
        self.register_buffer(
            "class_weights", None if class_weights is None else class_weights.float()
        )

    def forward(
        self,
        output: ModelOutput,
        targets: torch.Tensor,
        weights: LossWeights,
        teacher_logits: torch.Tensor | None = None,
        teacher_embeddings: torch.Tensor | None = None,
    ) -> LossBreakdown:
        parts: dict[str, torch.Tensor] = {}
        weighted: list[torch.Tensor] = []
        if weights.ce > 0:
            parts["ce"] = classification_loss(
                output.logits, targets, self.task, class_weights=self.class_weights
            )
            weighted.append(weights.ce * parts["ce"])
        if weights.contrastive > 0:
            parts["contrastive"] = contrastive_loss(
                output.embedding, targets, self.task, margin=self.contrastive_margin
            )
            weighted.append(weights.contrastive * parts["contrastive"])
        if weights.triplet > 0:
            parts["triplet"] = triplet_loss(
                output.embedding,
                targets,
                self.task,
                margin=self.triplet_margin,
                mining=self.mining,
            )
            weighted.append(weights.triplet * parts["triplet"])
        if weights.distill > 0:
            if teacher_logits is None:
                raise ValueError("the distillation weight is positive but no teacher_logits given")
            parts["distill"] = distillation_loss(
                output.logits,
                teacher_logits,
                self.task,
                temperature=self.temperature,
                hard=self.distill_hard,
            )
            weighted.append(weights.distill * parts["distill"])
        if weights.geometry > 0:
            if teacher_embeddings is None:
                raise ValueError("the geometry weight is positive but no teacher_embeddings given")
            parts["geometry"] = geometry_loss(
                output.embedding, teacher_embeddings, temperature=self.geometry_temperature
            )
            weighted.append(weights.geometry * parts["geometry"])
        total = torch.stack(weighted).sum()
        return LossBreakdown(total=total, parts={k: v.detach() for k, v in parts.items()})
