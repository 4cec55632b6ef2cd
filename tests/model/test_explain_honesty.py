"""Honesty checks of the explanations (issue 14): localisation, model randomisation,
determinism, and the folding of every scale onto the finest grid.

A small MultiScaleViT is trained here, in about a minute on one core, on generated
canvases whose class is decided only by a striped square at a random place — red, blue,
or none (support/explain_data.py, ``three_class_images``); its maps must point at that
square, and must change when the weights are re-initialised (Adebayo et al. 2018,
"Sanity checks for saliency maps"). The measured figures are logged (run with
``--log-cli-level=INFO``) and recorded in docs/results.md; ``bench/explain_localisation.py``
measures them for other training seeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import model.explain as model_explain
from imaging.preprocessing import PreprocessConfig, normalise
from model.architectures import build_model
from model.config import ModelConfig
from model.explain import (
    METHOD,
    STEPS,
    IntegrationPath,
    QueryExplainer,
    explain_class,
    explain_similarity,
    explaining,
    fold_scales,
    method_name,
    tokens_of,
)
from model.inference import infer
from model.vit import MultiScaleViT
from support.explain_data import NO_PATTERN, PatternImages, pattern_cells, three_class_images
from support.saliency import mass_inside, peak_inside, ranks, spearman

CANVAS, PATCH = 64, 8  # an 8×8 finest grid; the pyramid adds a 4×4 level
CPU = torch.device("cpu")
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    network: MultiScaleViT
    preprocessing: PreprocessConfig
    held_out: PatternImages

    def with_pattern(self) -> list[int]:
        """The held-out canvases that have a pattern to point at."""
        return [i for i, label in enumerate(self.held_out.labels.tolist()) if label != NO_PATTERN]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on the 2 shared CI cores two threads are ~20× slower here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config() -> ModelConfig:
    return ModelConfig.from_variant(
        "tiny",
        num_classes=3,
        depth=2,
        width=64,
        heads=2,
        embed_dim=64,
        patch_size=PATCH,
        image_size=CANVAS,
        dropout=0.0,
    )


@pytest.fixture(scope="module")
def trained(_one_thread: None) -> Trained:
    """1,200 Adam steps (3e-4) of cross-entropy on 1,536 canvases (about 70 s on one core).

    With ``torch.manual_seed`` 0 to 7 every model reaches held-out accuracy 1.00, and the
    served class map peaks on the pattern in 0.99–1.00 of the pattern canvases (the
    gradient norm served before: 0.54 for seed 2). Seed 0 is fixed here; docs/results.md
    has the whole table. (At 1e-3 most seeds never tell blue from "no pattern".)
    """
    torch.manual_seed(0)
    preprocessing = PreprocessConfig(image_size=(CANVAS, CANVAS))
    train = three_class_images(1536, seed=1, canvas=CANVAS)
    inputs = normalise(train.canvases, preprocessing)
    network = build_model(_config())
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-4)
    batches = torch.Generator().manual_seed(0)
    network.train()
    for _ in range(1200):
        batch = torch.randint(0, len(train.labels), (32,), generator=batches)
        loss = torch.nn.functional.cross_entropy(network(inputs[batch]).logits, train.labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    network.eval()
    return Trained(network, preprocessing, three_class_images(150, seed=2, canvas=CANVAS))


def _class_maps(network: MultiScaleViT, trained: Trained) -> list[np.ndarray]:
    """The map of its true class for every held-out canvas with a pattern."""
    images = trained.held_out
    return [
        explain_class(
            network, images.canvases[i], trained.preprocessing, CPU, int(images.labels[i])
        )
        for i in trained.with_pattern()
    ]


def _insides(trained: Trained, indices: list[int]) -> list[np.ndarray]:
    """Where a peak counts as on the pattern (support.pattern_cells)."""
    grid = (CANVAS // PATCH, CANVAS // PATCH)
    return [pattern_cells(trained.held_out, i, grid, PATCH) for i in indices]


def test_spearman_ranks_ties_by_their_mean() -> None:
    assert ranks(np.array([3.0, 1.0, 1.0, 2.0])).tolist() == [3.0, 0.5, 0.5, 2.0]
    grid = np.arange(16.0).reshape(4, 4)
    assert spearman(grid, grid**3) == pytest.approx(1.0)
    assert spearman(grid, -grid) == pytest.approx(-1.0)
    assert spearman(grid, np.zeros_like(grid)) == 0.0


def test_the_small_model_classifies_held_out_canvases(trained: Trained) -> None:
    with torch.no_grad():
        logits = trained.network(normalise(trained.held_out.canvases, trained.preprocessing)).logits
    accuracy = float((logits.argmax(-1) == trained.held_out.labels).float().mean())
    LOG.info("held-out accuracy %.2f", accuracy)
    assert accuracy >= 0.9  # otherwise the localisation below would explain a guesser


def test_class_map_peaks_on_the_pattern(trained: Trained) -> None:
    """The issue's goal: the peak inside the pattern's box for ≥ 80 % of queries (a cell is
    inside when it overlaps the box and not the distractor's: support.pattern_cells). This
    model reaches 1.00, and models of seven other training seeds 0.99–1.00
    (docs/results.md)."""
    grids = _class_maps(trained.network, trained)
    insides = _insides(trained, trained.with_pattern())
    hit_rate = np.mean([peak_inside(g, m) for g, m in zip(grids, insides, strict=True)])
    baseline = np.mean([m.mean() for m in insides])  # where a uniform random map peaks
    mass = np.mean([mass_inside(g, m) for g, m in zip(grids, insides, strict=True)])
    LOG.info(
        "class map: peak inside %.2f (random map %.3f), mass inside %.2f", hit_rate, baseline, mass
    )
    assert all(g.shape == (CANVAS // PATCH, CANVAS // PATCH) for g in grids)
    assert hit_rate >= 0.8
    assert mass >= 2.5 * baseline


def test_similarity_maps_of_both_sides_peak_on_the_pattern(trained: Trained) -> None:
    """Query i and case i + 3 share a class (classes cycle by 3); 50 pattern pairs."""
    images = trained.held_out
    pairs = [i for i in trained.with_pattern() if i + 3 < len(images.labels)][:50]
    query_hits, case_hits = [], []
    for i, inside, case_inside in zip(
        pairs, _insides(trained, pairs), _insides(trained, [i + 3 for i in pairs]), strict=True
    ):
        explanation = explain_similarity(
            trained.network, images.canvases[i], images.canvases[i + 3], trained.preprocessing, CPU
        )
        query_hits.append(peak_inside(explanation.query_map, inside))
        case_hits.append(peak_inside(explanation.case_map, case_inside))
        assert explanation.method == METHOD
        for grid in (explanation.query_map, explanation.case_map):
            assert grid.min() >= 0.0
            assert grid.max() <= 1.0
    LOG.info(
        "similarity maps: peak inside, query %.2f, case %.2f",
        np.mean(query_hits),
        np.mean(case_hits),
    )
    assert np.mean(query_hits) >= 0.8  # 1.00 for this model; a random map: ≈ 0.125
    assert np.mean(case_hits) >= 0.8


def test_the_class_map_tells_the_classes_apart(trained: Trained) -> None:
    """The map of another class for the same canvas is not the true class's: a map that
    showed only where the model is sensitive would be the same for every class (the
    token-gradient norm: Spearman 0.93–1.00, docs/results.md)."""
    images = trained.held_out
    true_maps = _class_maps(trained.network, trained)
    other_maps = [
        explain_class(
            trained.network,
            images.canvases[i],
            trained.preprocessing,
            CPU,
            (int(images.labels[i]) + 1) % 3,
        )
        for i in trained.with_pattern()
    ]
    correlations = [spearman(a, b) for a, b in zip(true_maps, other_maps, strict=True)]
    LOG.info("Spearman true class vs the next class: mean %.2f", np.mean(correlations))
    assert np.mean(correlations) < 0.5


def _signed_attributions(
    monkeypatch: pytest.MonkeyPatch, explain: Callable[[], object]
) -> list[list[torch.Tensor]]:
    """The signed per-scale attributions the served functions fold into their maps, in
    the order they fold them (captured at model.explain.fold_scales)."""
    captured: list[list[torch.Tensor]] = []

    def capture(per_scale: list[torch.Tensor], *args: object) -> np.ndarray:
        captured.append([t.clone() for t in per_scale])
        return fold_scales(per_scale, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(model_explain, "fold_scales", capture)
    explain()
    monkeypatch.undo()
    return captured


def test_the_served_attributions_add_up_to_the_change_from_the_baseline(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Integrated gradients' completeness, through ``explain_similarity`` itself: with
    enough steps each side's attributions sum to its score minus the score at its baseline
    (each scale's mean token) with the other side held fixed, in the centred space, and
    the class map's to the logit's change. At the served 2 steps they do not (logged)."""
    network, pre = trained.network, trained.preprocessing
    canvases = trained.held_out.canvases
    centre = np.full(64, 0.05, dtype=np.float32)

    def embedded(scale_tokens: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            embedding = network.embed_head(network.features_from_tokens(scale_tokens))
            unit = torch.nn.functional.normalize(embedding, dim=-1)
            shift = torch.as_tensor(centre)
            return torch.nn.functional.normalize(unit - shift, dim=-1)[0], embedding[0]

    def changes(query: torch.Tensor, case: torch.Tensor, label: int) -> list[float]:
        """Query side, case side, class logit: value at the tokens minus at the baseline."""
        sides = []
        for canvas in (query, case):
            tokens = tokens_of(network, canvas.unsqueeze(0), pre, CPU)
            base = [t.mean(1, keepdim=True).expand_as(t) for t in tokens]
            sides.append((embedded(tokens), embedded(base)))
        (q, q_embedding), (q0, q0_embedding) = sides[0]
        (c, _), (c0, _) = sides[1]
        with torch.no_grad():
            logit = network.classifier(torch.stack([q_embedding, q0_embedding]))[:, label]
        return [float(q @ c - q0 @ c), float(c @ q - c0 @ q), float(logit[0] - logit[1])]

    def sums(query: torch.Tensor, case: torch.Tensor, label: int, steps: int) -> list[float]:
        folded = _signed_attributions(
            monkeypatch,
            lambda: explain_similarity(
                network, query, case, pre, CPU, class_index=label, centre=centre, steps=steps
            ),
        )
        return [float(sum(a.sum() for a in scales)) for scales in folded]  # query, case, class

    label = int(trained.held_out.labels[0])
    expected = changes(canvases[0], canvases[3], label)
    exact = sums(canvases[0], canvases[3], label, 64)
    LOG.info("changes %s; attribution sums at 64 steps %s", expected, exact)
    assert min(abs(e) for e in expected) > 1e-3  # every quantity moves: the check means something
    for total, change in zip(exact, expected, strict=True):
        assert total == pytest.approx(change, rel=0.02, abs=1e-4)
    relative = []  # the served 2 steps, over 10 pattern pairs
    for i in trained.with_pattern()[:10]:
        label = int(trained.held_out.labels[i])
        for total, change in zip(
            sums(canvases[i], canvases[i + 3], label, STEPS),
            changes(canvases[i], canvases[i + 3], label),
            strict=True,
        ):
            relative.append(abs(total - change) / max(abs(change), 1e-6))
    LOG.info(
        "at %d steps, |sum - change| / |change|: median %.2f, range %.2f-%.2f",
        STEPS,
        np.median(relative),
        min(relative),
        max(relative),
    )


def test_the_path_takes_the_midpoints() -> None:
    tokens = [torch.arange(8.0).reshape(1, 2, 4), torch.ones(1, 1, 4)]
    path = IntegrationPath.of(tokens, 2)
    base = tokens[0].mean(1, keepdim=True)
    assert torch.allclose(path.points[0][0], (base + 0.25 * (tokens[0] - base))[0])
    assert torch.allclose(path.points[0][1], (base + 0.75 * (tokens[0] - base))[0])
    assert all(p.requires_grad and p.is_leaf for p in path.points)
    assert path.points[0].shape == (2, 2, 4)
    assert torch.equal(path.offsets[1], torch.zeros(1, 1, 4))  # one token: its own mean


def test_the_method_names_its_steps() -> None:
    assert f"({STEPS} steps" in METHOD
    assert method_name(16) != METHOD
    with pytest.raises(ValueError, match="at least 1 step"):
        IntegrationPath.of([torch.zeros(1, 4, 8)], 0)


def test_maps_change_when_the_weights_are_reinitialised(trained: Trained) -> None:
    torch.manual_seed(1)
    scrambled = build_model(_config()).eval()
    trained_maps = _class_maps(trained.network, trained)
    scrambled_maps = _class_maps(scrambled, trained)
    correlations = [spearman(a, b) for a, b in zip(trained_maps, scrambled_maps, strict=True)]
    mean = float(np.mean(correlations))
    LOG.info("Spearman trained vs re-initialised: mean %.2f", mean)
    assert mean < 0.5


def test_the_same_input_gives_the_identical_map(trained: Trained) -> None:
    network, pre, canvases = trained.network, trained.preprocessing, trained.held_out.canvases
    first_class = explain_class(network, canvases[0], pre, CPU, 1)
    first_pair = explain_similarity(network, canvases[0], canvases[3], pre, CPU)
    explain_similarity(network, canvases[5], canvases[8], pre, CPU)  # something in between
    explain_class(network, canvases[5], pre, CPU, 0)
    again_pair = explain_similarity(network, canvases[0], canvases[3], pre, CPU)
    assert np.array_equal(explain_class(network, canvases[0], pre, CPU, 1), first_class)
    assert np.array_equal(again_pair.query_map, first_pair.query_map)
    assert np.array_equal(again_pair.case_map, first_pair.case_map)
    assert again_pair.score == first_pair.score


def test_one_prepared_query_explains_each_case_as_a_pair_alone(trained: Trained) -> None:
    """The query's side, prepared once and its graph kept, gives every case the maps the
    pair gets alone, whatever came before; the class map through the kept path is the
    one-canvas class map; the query's embedding as /query computed it gives the same."""
    network, pre, canvases = trained.network, trained.preprocessing, trained.held_out.canvases
    alone = [explain_similarity(network, canvases[0], canvases[i], pre, CPU) for i in (2, 6, 9)]
    embedding = infer(network, canvases[:1], pre, CPU).embeddings[0]
    with explaining(network):
        explainer = QueryExplainer(network, canvases[0], pre, CPU, query_embedding=embedding)
        shared = [explainer.similarity(canvases[i]) for i in (2, 6, 9)]
        class_map = explainer.class_map(1)
    for one, other in zip(alone, shared, strict=True):
        np.testing.assert_allclose(other.query_map, one.query_map, atol=1e-5)
        np.testing.assert_allclose(other.case_map, one.case_map, atol=1e-5)
        assert other.score == pytest.approx(one.score, abs=1e-5)
    assert not np.allclose(shared[0].query_map, shared[1].query_map, atol=1e-2)  # per case
    np.testing.assert_allclose(
        class_map, explain_class(network, canvases[0], pre, CPU, 1), atol=1e-5
    )


def test_a_query_is_explained_only_in_eval_mode(trained: Trained) -> None:
    network = build_model(_config()).train()
    with pytest.raises(RuntimeError, match="eval mode"):
        QueryExplainer(network, trained.held_out.canvases[0], trained.preprocessing, CPU)


def test_explaining_leaves_a_training_network_in_training_mode(trained: Trained) -> None:
    network = build_model(_config()).train()
    explain_class(network, trained.held_out.canvases[0], trained.preprocessing, CPU, 0)
    assert network.training


def _levels(size: int, patch: int) -> list[int]:
    """Tokens per level for a square canvas (the pyramid of model.vit)."""
    return [(size >> level) // patch for level in range(3)]


@pytest.mark.parametrize("level", [0, 1, 2])
def test_fold_puts_a_token_on_exactly_its_finest_cells(level: int) -> None:
    sides = _levels(64, 8)  # 8, 4, 2 tokens a side
    per_scale = [torch.zeros(side * side) for side in sides]
    row, col = sides[level] - 1, 0  # the bottom-left token of that level
    per_scale[level][row * sides[level] + col] = 1.0
    grid = fold_scales(per_scale, (64, 64), 8)
    span = 2**level
    expected = np.zeros((8, 8), dtype=np.float32)
    expected[row * span : (row + 1) * span, col * span : (col + 1) * span] = 1.0
    assert grid.dtype == np.float32
    assert np.array_equal(grid, expected)


def test_fold_adds_the_scales_clips_negatives_and_scales_to_one() -> None:
    per_scale = [torch.zeros(64), torch.zeros(16), torch.zeros(4)]
    per_scale[0][0] = 3.0  # finest cell (0, 0)
    per_scale[1][0] = 1.0  # cells (0..1, 0..1)
    per_scale[0][63] = -5.0  # evidence against: counted as 0
    grid = fold_scales(per_scale, (64, 64), 8)
    assert grid[0, 0] == 1.0
    assert grid[0, 1] == grid[1, 0] == grid[1, 1] == pytest.approx(0.25)
    assert grid[7, 7] == 0.0
    assert grid.min() >= 0.0
    assert grid.max() == 1.0


def test_fold_keeps_nothing_at_zero() -> None:
    all_zero = fold_scales([torch.zeros(64), torch.zeros(16)], (64, 64), 8)
    only_negative = fold_scales([-torch.ones(64), torch.zeros(16)], (64, 64), 8)
    assert not all_zero.any()
    assert not only_negative.any()


def test_fold_on_a_canvas_that_is_not_square() -> None:
    # 48 × 80 px, patch 8: level 0 is 6 × 10 cells, level 1 (24 × 40) is 3 × 5 tokens
    per_scale = [torch.rand(60, generator=torch.Generator().manual_seed(0)), torch.zeros(15)]
    per_scale[1][14] = 10.0  # last level-1 token: finest rows 4..5, cols 8..9
    grid = fold_scales(per_scale, (48, 80), 8)
    assert grid.shape == (6, 10)
    assert float(grid[4:6, 8:10].min()) > float(np.delete(grid.ravel(), [48, 49, 58, 59]).max())
