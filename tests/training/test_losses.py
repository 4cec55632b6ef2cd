from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from labels import Task
from model.vit import ModelOutput
from training.losses import (
    LossWeights,
    MultiLoss,
    balanced_class_weights,
    classification_loss,
    contrastive_loss,
    distillation_loss,
    negative_mask,
    positive_mask,
    triplet_loss,
)

SINGLE, MULTI = Task.SINGLE_LABEL, Task.MULTI_LABEL


def points(*xy: tuple[float, float]) -> torch.Tensor:
    return torch.tensor(xy, dtype=torch.float32)


def labels(*classes: int) -> torch.Tensor:
    return torch.tensor(classes, dtype=torch.int64)


# ---------------------------------------------------------------------------- masks


def test_positive_mask_single_label_is_same_class_off_the_diagonal() -> None:
    pos = positive_mask(labels(0, 1, 0, 2), SINGLE)
    expected = torch.tensor(
        [
            [False, False, True, False],
            [False, False, False, False],
            [True, False, False, False],
            [False, False, False, False],
        ]
    )
    assert torch.equal(pos, expected)
    neg = negative_mask(labels(0, 1, 0, 2), SINGLE)
    assert torch.equal(neg, ~expected & ~torch.eye(4, dtype=torch.bool))


def test_positive_mask_multi_label_shared_finding_and_no_finding_rows() -> None:
    targets = torch.tensor(
        [
            [1.0, 0.0, 0.0],  # 0: finding A
            [1.0, 1.0, 0.0],  # 1: A and B → positive with 0
            [0.0, 0.0, 0.0],  # 2: no finding
            [0.0, 0.0, 0.0],  # 3: no finding → positive with 2
            [0.0, 0.0, 1.0],  # 4: C alone → no positive
        ]
    )
    pos = positive_mask(targets, MULTI)
    expected_pairs = {(0, 1), (1, 0), (2, 3), (3, 2)}
    got_pairs = {(int(i), int(j)) for i, j in pos.nonzero()}
    assert got_pairs == expected_pairs
    neg = negative_mask(targets, MULTI)
    assert not neg.diagonal().any()
    assert neg[2, 0]
    assert neg[0, 2]
    assert neg[0, 4]
    assert neg[4, 2]
    assert not (pos & neg).any()
    assert int(neg.sum()) == 5 * 4 - len(expected_pairs)


def test_multi_label_mask_reads_soft_targets_by_threshold() -> None:
    soft = torch.tensor([[0.95, 0.05], [0.9, 0.0], [0.05, 0.05]])
    pos = positive_mask(soft, MULTI)
    assert pos[0, 1]
    assert not pos[0, 2]
    assert not pos[1, 2]


def test_mask_rejects_wrongly_shaped_targets() -> None:
    with pytest.raises(ValueError, match="multi-label"):
        positive_mask(labels(0, 1), MULTI)
    with pytest.raises(ValueError, match="one-label"):
        positive_mask(torch.zeros(2, 3), SINGLE)


# ---------------------------------------------------------------------------- contrastive


def test_contrastive_loss_hand_computed() -> None:
    # A0 (0, 0), A1 (0.3, 0) same class; B (0, 0.4) another; margin 0.5.
    emb = points((0.0, 0.0), (0.3, 0.0), (0.0, 0.4))
    # positives: d²(A0, A1) = 0.09 (both orders) → mean 0.09
    # negatives: d(A0, B) = 0.4 → (0.5 − 0.4)² = 0.01; d(A1, B) = 0.5 → 0; mean over 4 ordered pairs
    expected = 0.09 + (0.01 + 0.0 + 0.01 + 0.0) / 4
    got = contrastive_loss(emb, labels(0, 0, 1), SINGLE, margin=0.5)
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_contrastive_loss_without_positive_pairs_is_the_negative_term_only() -> None:
    emb = points((0.0, 0.0), (0.3, 0.0))
    got = contrastive_loss(emb, labels(0, 1), SINGLE, margin=0.5)
    assert got.item() == pytest.approx((0.5 - 0.3) ** 2, abs=1e-6)
    only_positives = contrastive_loss(emb, labels(3, 3), SINGLE, margin=0.5)
    assert only_positives.item() == pytest.approx(0.09, abs=1e-6)


def test_contrastive_loss_on_multi_label_no_finding_pair() -> None:
    emb = points((0.0, 0.0), (0.0, 0.2), (1.0, 0.0))
    targets = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    # normal pair d² = 0.04; negatives at d = 1 and √1.04 are beyond the margin
    got = contrastive_loss(emb, targets, MULTI, margin=0.5)
    assert got.item() == pytest.approx(0.04, abs=1e-6)


# ---------------------------------------------------------------------------- triplet


def test_triplet_semihard_hand_computed() -> None:
    # On a line: A0 = 0, A1 = 0.5 (class 0); B0 = 0.6, B1 = 2.0 (class 1); margin 0.2.
    emb = points((0.0, 0.0), (0.5, 0.0), (0.6, 0.0), (2.0, 0.0))
    # (A0, A1): d_ap 0.5, B0 at 0.6 is semi-hard (0.5 < 0.6 < 0.7)      → 0.5 − 0.6 + 0.2 = 0.1
    # (A1, A0): d_ap 0.5, negatives 0.1, 1.5: none semi-hard → hardest 0.1 → 0.5 − 0.1 + 0.2 = 0.6
    # (B0, B1): d_ap 1.4, negatives 0.6, 0.1: none semi-hard → hardest 0.1 → 1.4 − 0.1 + 0.2 = 1.5
    # (B1, B0): d_ap 1.4, negatives 2.0, 1.5: 1.5 is semi-hard            → 1.4 − 1.5 + 0.2 = 0.1
    expected = (0.1 + 0.6 + 1.5 + 0.1) / 4
    got = triplet_loss(emb, labels(0, 0, 1, 1), SINGLE, margin=0.2, mining="semihard")
    assert got.item() == pytest.approx(expected, abs=1e-5)


def test_triplet_batch_hard_hand_computed() -> None:
    # A0 (0, 0), A1 (0, 0.3), A2 (0, 1) in class 0; B (0.8, 0) alone in class 1 (never an anchor).
    emb = points((0.0, 0.0), (0.0, 0.3), (0.0, 1.0), (0.8, 0.0))
    m = 0.2
    a0 = max(0.0, 1.0 - 0.8 + m)  # farthest positive A2, closest negative B
    a1 = max(0.0, 0.7 - math.hypot(0.8, 0.3) + m)  # farthest positive A2
    a2 = max(0.0, 1.0 - math.hypot(0.8, 1.0) + m)  # farthest positive A0 → 0
    expected = (a0 + a1 + a2) / 3
    got = triplet_loss(emb, labels(0, 0, 0, 1), SINGLE, margin=m, mining="hard")
    assert got.item() == pytest.approx(expected, abs=1e-5)
    # semi-hard differs: every (a, p) gets one triplet, 6 of them
    semi = triplet_loss(emb, labels(0, 0, 0, 1), SINGLE, margin=m, mining="semihard")
    assert semi.item() != pytest.approx(expected, abs=1e-3)


def brute_force_semihard(d: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, m: float) -> float:
    losses = []
    n = d.shape[0]
    for a, p in itertools.product(range(n), range(n)):
        negs = [k for k in range(n) if neg[a, k]]
        if not pos[a, p] or not negs:
            continue
        semi = [k for k in negs if d[a, p] < d[a, k] < d[a, p] + m]
        chosen = min(semi or negs, key=lambda k: float(d[a, k]))
        losses.append(max(0.0, float(d[a, p] - d[a, chosen]) + m))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("task", [SINGLE, MULTI])
def test_triplet_semihard_matches_a_brute_force_loop(task: Task) -> None:
    gen = torch.Generator().manual_seed(3)
    emb = F.normalize(torch.randn(10, 4, generator=gen), dim=1)
    if task is SINGLE:
        targets = torch.randint(0, 3, (10,), generator=gen)
    else:
        targets = (torch.rand(10, 3, generator=gen) < 0.3).float()
    d = torch.cdist(emb.double(), emb.double())
    expected = brute_force_semihard(
        d, positive_mask(targets, task), negative_mask(targets, task), 0.3
    )
    got = triplet_loss(emb, targets, task, margin=0.3, mining="semihard")
    assert got.item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("mining", ["semihard", "hard"])
def test_triplet_without_valid_triplet_is_zero_and_keeps_the_graph(mining: str) -> None:
    emb = torch.randn(4, 3, requires_grad=True)
    for targets in (labels(1, 1, 1, 1), labels(0, 1, 2, 3)):  # no negatives / no positives
        loss = triplet_loss(emb, targets, SINGLE, mining=mining)
        assert loss.item() == 0.0
        assert loss.requires_grad
        loss.backward()
        assert emb.grad is not None
        assert torch.equal(emb.grad, torch.zeros_like(emb))


def test_triplet_rejects_unknown_mining() -> None:
    with pytest.raises(ValueError, match="mining"):
        triplet_loss(torch.randn(4, 2), labels(0, 0, 1, 1), SINGLE, mining="easy")


# ---------------------------------------------------------------------------- gradients


def metric_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    emb = F.normalize(torch.randn(12, 8, generator=gen), dim=1)
    return emb, labels(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2)


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda e, t: contrastive_loss(e, t, SINGLE),
        lambda e, t: triplet_loss(e, t, SINGLE, mining="semihard"),
        lambda e, t: triplet_loss(e, t, SINGLE, mining="hard"),
    ],
    ids=["contrastive", "semihard", "hard"],
)
def test_metric_losses_have_finite_nonzero_gradients_even_for_identical_embeddings(
    loss_fn: object,
) -> None:
    emb, targets = metric_batch()
    emb = torch.cat([emb, emb[:1]])  # an exact duplicate: d = 0
    targets = torch.cat([targets, targets[:1]])
    raw = emb.clone().requires_grad_(True)
    loss = loss_fn(F.normalize(raw, dim=1), targets)  # type: ignore[operator]
    loss.backward()
    assert raw.grad is not None
    assert torch.isfinite(raw.grad).all()
    assert raw.grad.abs().sum() > 0


@pytest.mark.parametrize("which", ["contrastive", "semihard", "hard"])
def test_metric_losses_fall_when_classes_are_pulled_together(which: str) -> None:
    emb, targets = metric_batch()

    def loss(e: torch.Tensor) -> float:
        if which == "contrastive":
            return contrastive_loss(e, targets, SINGLE).item()
        return triplet_loss(e, targets, SINGLE, mining=which).item()

    centres = torch.stack([emb[targets == c].mean(0) for c in range(3)])  # (3, E)
    pulled = F.normalize(0.3 * emb + 0.7 * centres[targets], dim=1)
    assert loss(pulled) < loss(emb)


def test_a_few_sgd_steps_on_the_multi_loss_reduce_it() -> None:
    emb0, targets = metric_batch()
    raw = emb0.clone().requires_grad_(True)
    head = torch.nn.Linear(8, 3)
    opt = torch.optim.SGD([raw, *head.parameters()], lr=0.5)
    criterion = MultiLoss(SINGLE)
    weights = LossWeights(ce=1.0, contrastive=1.0, triplet=1.0)
    history = []
    for _ in range(20):
        e = F.normalize(raw, dim=1)
        out = criterion(ModelOutput(embedding=e, logits=head(e)), targets, weights)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        history.append(out.total.item())
    assert history[-1] < 0.7 * history[0]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_losses_under_bf16_autocast_are_float32_and_close_to_full_precision(device: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(12, 16, generator=gen).to(device)
    layer = torch.nn.Linear(16, 8).to(device)
    targets = labels(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2).to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        emb_bf16 = F.normalize(layer(x), dim=1)
        assert emb_bf16.dtype == torch.bfloat16
        c = contrastive_loss(emb_bf16, targets, SINGLE)
        t = triplet_loss(emb_bf16, targets, SINGLE)
    assert c.dtype == torch.float32
    assert t.dtype == torch.float32
    emb32 = F.normalize(emb_bf16.float(), dim=1)
    assert c.item() == pytest.approx(contrastive_loss(emb32, targets, SINGLE).item(), rel=0.05)
    assert t.item() == pytest.approx(triplet_loss(emb32, targets, SINGLE).item(), rel=0.05)
    (c + t).backward()
    assert layer.weight.grad is not None
    assert torch.isfinite(layer.weight.grad).all()


# ---------------------------------------------------------------------------- classification


def test_classification_loss_single_label_is_weighted_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    targets = labels(0, 2)
    w = torch.tensor([1.0, 1.0, 3.0])
    p0 = math.exp(2.0) / (math.exp(2.0) + 1.0 + math.exp(-1.0))
    p1 = 1.0 / (2.0 + math.e)
    expected = (-1.0 * math.log(p0) - 3.0 * math.log(p1)) / (1.0 + 3.0)
    got = classification_loss(logits, targets, SINGLE, class_weights=w)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_classification_loss_multi_label_uses_class_weights_as_pos_weight() -> None:
    logits = torch.tensor([[0.5, -1.0]])
    targets = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([4.0, 9.0])

    def log_sigmoid(z: float) -> float:
        return -math.log1p(math.exp(-z))

    # class 0 positive: −4·log σ(0.5); class 1 negative: −log(1 − σ(−1)) (pos_weight unused)
    expected = (-4.0 * log_sigmoid(0.5) - log_sigmoid(1.0)) / 2
    got = classification_loss(logits, targets, MULTI, class_weights=w)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_multi_label_smoothing_moves_targets_towards_one_half() -> None:
    logits = torch.tensor([[0.3, -0.2]])
    targets = torch.tensor([[1.0, 0.0]])
    got = classification_loss(logits, targets, MULTI, label_smoothing=0.2)
    expected = F.binary_cross_entropy_with_logits(logits, torch.tensor([[0.9, 0.1]]))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_classification_loss_under_autocast_returns_float32() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.nn.Linear(4, 3)(torch.randn(5, 4))
        loss = classification_loss(logits, labels(0, 1, 2, 0, 1), SINGLE)
    assert loss.dtype == torch.float32


# ---------------------------------------------------------------------------- distillation


def test_distillation_single_label_is_tempered_kl_times_t_squared() -> None:
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 2.0]])
    temp = 2.0
    ps = torch.softmax(s / temp, dim=1)[0]
    pt = torch.softmax(t / temp, dim=1)[0]
    expected = float((pt * (pt.log() - ps.log())).sum()) * temp**2
    got = distillation_loss(s, t, SINGLE, temperature=temp)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert distillation_loss(t, t, SINGLE).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_multi_label_has_zero_gradient_when_student_matches_teacher() -> None:
    teacher = torch.tensor([[1.5, -0.5, 0.0]])
    student = teacher.clone().requires_grad_(True)
    loss = distillation_loss(student, teacher, MULTI, temperature=3.0)
    loss.backward()
    assert student.grad is not None
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-6)
    other = distillation_loss(torch.zeros(1, 3), teacher, MULTI, temperature=3.0)
    assert other.item() > loss.item()


def test_distillation_does_not_backpropagate_into_the_teacher() -> None:
    teacher = torch.randn(2, 3, requires_grad=True)
    student = torch.randn(2, 3, requires_grad=True)
    distillation_loss(student, teacher, SINGLE).backward()
    assert teacher.grad is None
    assert student.grad is not None


# ---------------------------------------------------------------------------- class weights


def test_balanced_class_weights_single_label_follow_sklearn_balanced() -> None:
    targets = np.array([0, 0, 0, 1])
    w = balanced_class_weights(targets, 3, SINGLE)
    # n / (C · count): 4 / 9, 4 / 3; class 2 absent → neutral 1
    torch.testing.assert_close(w, torch.tensor([4 / 9, 4 / 3, 1.0]))
    every_class = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    w = balanced_class_weights(every_class, 3, SINGLE)
    per_sample = w[torch.from_numpy(every_class)]
    assert per_sample.mean().item() == pytest.approx(1.0)  # the average sample keeps weight 1
    assert w[2] / w[0] == pytest.approx(5.0)  # inverse frequency


def test_balanced_class_weights_multi_label_are_clipped_neg_pos_ratios() -> None:
    targets = torch.zeros(102, 3)
    targets[:51, 0] = 1  # 51 positive / 51 negative → 1
    targets[:1, 1] = 1  # 1 / 101 → clipped to 50
    targets[:80, 2] = 1  # 80 / 22 → below 1 → clipped to 1
    w = balanced_class_weights(targets, 3, MULTI)
    torch.testing.assert_close(w, torch.tensor([1.0, 50.0, 1.0]))
    targets[:, 1] = 0
    targets[:10, 1] = 1  # 10 / 92 → 9.2
    assert balanced_class_weights(targets.numpy(), 3, MULTI)[1].item() == pytest.approx(9.2)


def test_balanced_class_weights_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="class indices"):
        balanced_class_weights(np.array([0, 3]), 3, SINGLE)
    with pytest.raises(ValueError, match="multi-label"):
        balanced_class_weights(np.zeros((4, 2)), 3, MULTI)


# ---------------------------------------------------------------------------- MultiLoss


def model_output(task: Task) -> tuple[ModelOutput, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    emb = F.normalize(torch.randn(8, 6, generator=gen), dim=1).requires_grad_(True)
    logits = torch.randn(8, 3, generator=gen, requires_grad=True)
    if task is SINGLE:
        targets = labels(0, 0, 1, 1, 2, 2, 0, 1)
    else:
        targets = (torch.rand(8, 3, generator=gen) < 0.4).float()
    return ModelOutput(embedding=emb, logits=logits), targets


@pytest.mark.parametrize("task", [SINGLE, MULTI])
def test_multi_loss_total_is_the_weighted_sum_of_its_parts(task: Task) -> None:
    out, targets = model_output(task)
    cw = torch.tensor([1.0, 2.0, 0.5])
    criterion = MultiLoss(task, contrastive_margin=0.7, triplet_margin=0.3, class_weights=cw)
    weights = LossWeights(ce=0.2, contrastive=1.0, triplet=0.5)
    result = criterion(out, targets, weights)
    assert set(result.parts) == {"ce", "contrastive", "triplet"}
    ce = classification_loss(out.logits, targets, task, class_weights=cw)
    con = contrastive_loss(out.embedding, targets, task, margin=0.7)
    tri = triplet_loss(out.embedding, targets, task, margin=0.3)
    assert result.parts["ce"].item() == pytest.approx(ce.item())
    assert result.parts["contrastive"].item() == pytest.approx(con.item())
    assert result.parts["triplet"].item() == pytest.approx(tri.item())
    expected = 0.2 * ce + 1.0 * con + 0.5 * tri
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-6)
    result.total.backward()
    assert out.embedding.grad is not None
    assert out.logits.grad is not None


def test_multi_loss_skips_zero_weight_parts_and_needs_a_teacher_to_distill() -> None:
    out, targets = model_output(SINGLE)
    criterion = MultiLoss(SINGLE)
    ce_only = criterion(out, targets, LossWeights(ce=1.0, contrastive=0.0, triplet=0.0))
    assert set(ce_only.parts) == {"ce"}
    assert ce_only.total.item() == pytest.approx(ce_only.parts["ce"].item())
    with pytest.raises(ValueError, match="teacher"):
        criterion(out, targets, LossWeights(ce=1.0, contrastive=0.0, triplet=0.0, distill=0.5))
    teacher = torch.randn(8, 3)
    distilled = criterion(
        out, targets, LossWeights(ce=1.0, contrastive=0.0, triplet=0.0, distill=0.5), teacher
    )
    assert set(distilled.parts) == {"ce", "distill"}
    expected = distilled.parts["ce"] + 0.5 * distillation_loss(out.logits, teacher, SINGLE)
    assert distilled.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_multi_loss_class_weights_follow_the_module_to_a_dtype() -> None:
    criterion = MultiLoss(SINGLE, class_weights=torch.tensor([1.0, 2.0, 3.0]))
    assert "class_weights" in dict(criterion.named_buffers())
    criterion.to(torch.float64)
    assert criterion.class_weights is not None
    assert criterion.class_weights.dtype == torch.float64


def test_loss_weights_validate() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        LossWeights(ce=-1.0, contrastive=1.0, triplet=1.0)
    with pytest.raises(ValueError, match="positive"):
        LossWeights(ce=0.0, contrastive=0.0, triplet=0.0)
    with pytest.raises(ValueError, match="mining"):
        MultiLoss(SINGLE, mining="random")
