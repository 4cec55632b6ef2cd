"""Hard-label (DeiT) and geometry distillation: the two kinds besides Hinton's soft targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from labels import Task
from model.vit import ModelOutput
from training.losses import LossWeights, MultiLoss, distillation_loss, geometry_loss


def test_hard_distillation_is_cross_entropy_against_the_teachers_decision() -> None:
    student = torch.tensor([[0.2, 1.0, -0.3], [0.0, 0.0, 2.0]])
    teacher = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.1, 5.0]])
    got = distillation_loss(student, teacher, Task.SINGLE_LABEL, hard=True)
    assert got.item() == pytest.approx(F.cross_entropy(student, torch.tensor([0, 2])).item())
    multi = distillation_loss(student, teacher, Task.MULTI_LABEL, hard=True)
    decided = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    expected = F.binary_cross_entropy_with_logits(student, decided)
    assert multi.item() == pytest.approx(expected.item())


def test_geometry_is_zero_when_the_student_orders_the_batch_as_the_teacher() -> None:
    teacher = F.normalize(torch.randn(8, 16), dim=1)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    same_structure = teacher @ rotation  # same cosines, other coordinates
    assert geometry_loss(same_structure, teacher).item() == pytest.approx(0.0, abs=1e-5)
    unrelated = F.normalize(torch.randn(8, 16), dim=1)
    assert geometry_loss(unrelated, teacher).item() > 0.1


def test_geometry_pulls_the_student_towards_the_teachers_neighbours() -> None:
    torch.manual_seed(0)
    teacher = F.normalize(torch.randn(12, 8), dim=1)
    student = torch.randn(12, 4, requires_grad=True)  # another dimension is fine
    optimiser = torch.optim.SGD([student], lr=0.5)
    first = geometry_loss(student, teacher).item()
    for _ in range(200):
        optimiser.zero_grad()
        loss = geometry_loss(student, teacher)
        loss.backward()
        optimiser.step()
    assert loss.item() < first / 2

    # each image's nearest neighbour is now the teacher's nearest neighbour for most rows
    def nearest(x: torch.Tensor) -> torch.Tensor:
        sim = F.normalize(x.detach(), dim=1) @ F.normalize(x.detach(), dim=1).T
        return sim.fill_diagonal_(-2).argmax(dim=1)

    assert (nearest(student) == nearest(teacher)).float().mean() >= 0.75


def test_geometry_does_not_backpropagate_into_the_teacher_and_needs_pairs() -> None:
    teacher = torch.randn(4, 5, requires_grad=True)
    student = torch.randn(4, 5, requires_grad=True)
    geometry_loss(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None
    tiny = torch.randn(2, 5, requires_grad=True)
    assert geometry_loss(tiny, torch.randn(2, 5)).item() == 0.0  # still attached
    assert geometry_loss(tiny, torch.randn(2, 5)).requires_grad


def test_multi_loss_reports_geometry_and_needs_the_teachers_embeddings() -> None:
    loss = MultiLoss(Task.SINGLE_LABEL)
    out = ModelOutput(F.normalize(torch.randn(6, 4), dim=1), torch.randn(6, 3))
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    weights = LossWeights(ce=1.0, contrastive=0.0, triplet=0.0, geometry=0.5)
    with pytest.raises(ValueError, match="no teacher_embeddings"):
        loss(out, y, weights)
    parts = loss(out, y, weights, None, F.normalize(torch.randn(6, 7), dim=1))
    assert set(parts.parts) == {"ce", "geometry"}
    expected = parts.parts["ce"] + 0.5 * parts.parts["geometry"]
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-5)
