"""Do the maps point at the pattern, and do they depend on the model? Per training seed.

    python bench/explain_localisation.py [--task three|two] [--seeds 0 1 2 3]
                                         [--steps 1200] [--lr 3e-4]
                                         [--ig-steps 4] [--served-only]

The honesty checks of ``tests/model/test_explain_honesty.py`` for several training seeds,
for the served method (integrated gradients on the tokens, ``model.explain``, with
``--ig-steps`` steps) and the two served before it (the token-gradient norm, and token
gradient × input with negatives clipped; ``--served-only`` skips them). A tiny
multi-scale ViT (2 blocks, 64 wide, 8-px patches on 64-px canvases) is trained with Adam
on generated canvases (``tests/support/explain_data.py``: grey noise, a yellow striped
distractor, the class-determining striped square at a random place):

* ``three``: the test's task, a red square (class 0), a blue one (1) or none (2); only
  the pattern classes are measured;
* ``two``: the test's former task, a red square (0) or a green one (1). A model may
  detect one colour and explain the other class by its absence (try ``--steps 300 --lr
  1e-3``, the former test's training).

For each held-out canvas with a pattern it prints the share whose class map (of the true
class) peaks on a cell touching the pattern's box and not the distractor's
(``support.explain_data.pattern_cells``), in all and per class (a uniform random map:
≈ 0.125), the map's mass on those cells, the same peak share for the query and the case
map of a similarity with a canvas of the same class, the mean Spearman correlation of
the class maps with those of the same architecture re-initialised (Adebayo et al. 2018;
< 0.5 passes), and with the map of another class for the same canvas (near 1: the map
does not tell the classes apart). About 3 min a seed on one core (1.5 served only).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # the project's packages first,
sys.path.append(str(REPO / "tests"))  # then the generated canvases

import model.explain as explain  # noqa: E402
from imaging.preprocessing import PreprocessConfig, normalise  # noqa: E402
from model.architectures import build_model  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.vit import MultiScaleViT  # noqa: E402
from support.explain_data import (  # noqa: E402
    PatternImages,
    pattern_cells,
    pattern_images,
    three_class_images,
)
from support.saliency import mass_inside, peak_inside, spearman  # noqa: E402

CANVAS, PATCH, PATTERN = 64, 8, 16
GRID = (CANVAS // PATCH, CANVAS // PATCH)
CPU = torch.device("cpu")
PRE = PreprocessConfig(image_size=(CANVAS, CANVAS))


ClassMap = Callable[[MultiScaleViT, torch.Tensor, int], np.ndarray]
PairMaps = Callable[[MultiScaleViT, torch.Tensor, torch.Tensor], tuple[np.ndarray, np.ndarray]]


def _gradient_times_input(
    grads: tuple[torch.Tensor, ...], tokens: list[torch.Tensor], index: int
) -> np.ndarray:
    per_scale = [(g[index] * t[index]).sum(-1).detach() for g, t in zip(grads, tokens, strict=True)]
    return explain.fold_scales(per_scale, (CANVAS, CANVAS), PATCH)


def _gradient_norm(
    grads: tuple[torch.Tensor, ...], tokens: list[torch.Tensor], index: int
) -> np.ndarray:
    per_scale = [g[index].norm(dim=-1).detach() for g in grads]
    return explain.fold_scales(per_scale, (CANVAS, CANVAS), PATCH)


Relevance = Callable[[tuple[torch.Tensor, ...], list[torch.Tensor], int], np.ndarray]


def _leaves(network: MultiScaleViT, canvases: torch.Tensor) -> list[torch.Tensor]:
    return [t.requires_grad_(True) for t in explain.tokens_of(network, canvases, PRE, CPU)]


def _one_pass_class_map(relevance: Relevance) -> ClassMap:
    """A former method's class map: one backward of the logit to the tokens."""

    def class_map(network: MultiScaleViT, canvas: torch.Tensor, label: int) -> np.ndarray:
        with torch.enable_grad():
            tokens = _leaves(network, canvas.unsqueeze(0))
            logit = network.classifier(network.embed_head(network.features_from_tokens(tokens)))
            return relevance(torch.autograd.grad(logit[0, label], tokens), tokens, 0)

    return class_map


def _one_pass_similarity(relevance: Relevance) -> PairMaps:
    """A former method's two maps of a pair's cosine, each side with the other fixed."""

    def pair_maps(
        network: MultiScaleViT, query: torch.Tensor, case: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.enable_grad():
            tokens = _leaves(network, torch.stack([query, case]))
            unit = torch.nn.functional.normalize(
                network.embed_head(network.features_from_tokens(tokens)), dim=-1
            )
            target = (unit[0] * unit[1].detach()).sum() + (unit[1] * unit[0].detach()).sum()
            grads = torch.autograd.grad(target, tokens)
        return relevance(grads, tokens, 0), relevance(grads, tokens, 1)

    return pair_maps


def methods(ig_steps: int, served_only: bool) -> dict[str, tuple[ClassMap, PairMaps]]:
    """The served maps at ``ig_steps`` steps and, unless ``served_only``, the two methods
    served before, by name."""

    def served_class_map(network: MultiScaleViT, canvas: torch.Tensor, label: int) -> np.ndarray:
        return explain.explain_class(network, canvas, PRE, CPU, label, steps=ig_steps)

    def served_similarity(
        network: MultiScaleViT, query: torch.Tensor, case: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        explained = explain.explain_similarity(network, query, case, PRE, CPU, steps=ig_steps)
        return explained.query_map, explained.case_map

    chosen: dict[str, tuple[ClassMap, PairMaps]] = {
        "integrated gradients (served)": (served_class_map, served_similarity)
    }
    if not served_only:
        for name, relevance in (
            ("gradient norm", _gradient_norm),
            ("gradient × input", _gradient_times_input),
        ):
            chosen[name] = (_one_pass_class_map(relevance), _one_pass_similarity(relevance))
    return chosen


def images(task: str, count: int, seed: int) -> PatternImages:
    make = three_class_images if task == "three" else pattern_images
    return make(count, seed, canvas=CANVAS, pattern=PATTERN)


def trained(task: str, seed: int, steps: int, lr: float) -> MultiScaleViT:
    train = images(task, 1536 if task == "three" else 1024, 1)  # the tests' training sets
    inputs = normalise(train.canvases, PRE)
    torch.manual_seed(seed)
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=3 if task == "three" else 2, depth=2, width=64, heads=2,
        embed_dim=64, patch_size=PATCH, image_size=CANVAS, dropout=0.0,
    )  # fmt: skip
    network = build_model(cfg)
    assert isinstance(network, MultiScaleViT)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    batches = torch.Generator().manual_seed(0)
    network.train()
    for _ in range(steps):
        batch = torch.randint(0, len(train.labels), (32,), generator=batches)
        loss = torch.nn.functional.cross_entropy(network(inputs[batch]).logits, train.labels[batch])
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    return network.eval()


def measure(
    task: str, seed: int, steps: int, lr: float, compared: dict[str, tuple[ClassMap, PairMaps]]
) -> str:
    held = images(task, 150 if task == "three" else 100, 2)
    network = trained(task, seed, steps, lr)
    torch.manual_seed(1000 + seed)
    scrambled = build_model(network.cfg).eval()
    assert isinstance(scrambled, MultiScaleViT)
    with torch.no_grad():
        predicted = network(normalise(held.canvases, PRE)).logits.argmax(-1)
    accuracy = float((predicted == held.labels).float().mean())
    labels = held.labels.tolist()
    pattern = [i for i, label in enumerate(labels) if label < 2]  # "no pattern": nothing to find
    inside = {i: pattern_cells(held, i, GRID, PATCH) for i in range(len(labels))}
    step = 3 if task == "three" else 2  # the next canvas of the same class
    lines = [f"seed {seed}: held-out accuracy {accuracy:.2f}"]
    classes = int(held.labels.max()) + 1
    for name, (class_map, pair_maps) in compared.items():
        hits: dict[int, list[bool]] = {}
        mass, rho, other, query_hits, case_hits = [], [], [], [], []
        for i in pattern:
            canvas, label = held.canvases[i], labels[i]
            grid = class_map(network, canvas, label)
            hits.setdefault(label, []).append(peak_inside(grid, inside[i]))
            mass.append(mass_inside(grid, inside[i]))
            rho.append(spearman(grid, class_map(scrambled, canvas, label)))
            other.append(spearman(grid, class_map(network, canvas, (label + 1) % classes)))
            if i + step < len(labels):
                query_map, case_map = pair_maps(network, canvas, held.canvases[i + step])
                query_hits.append(peak_inside(query_map, inside[i]))
                case_hits.append(peak_inside(case_map, inside[i + step]))
        every = [h for values in hits.values() for h in values]
        per_class = " / ".join(f"{np.mean(v):.2f}" for _, v in sorted(hits.items()))
        lines.append(
            f"  {name}: class map peak inside {np.mean(every):.2f} ({per_class}), mass inside"
            f" {np.mean(mass):.2f}; similarity peak inside query {np.mean(query_hits):.2f},"
            f" case {np.mean(case_hits):.2f}; Spearman vs re-initialised {np.mean(rho):.2f},"
            f" vs the next class's map {np.mean(other):.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=("three", "two"), default="three")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument(
        "--ig-steps",
        type=int,
        default=explain.STEPS,
        help=f"the served maps' integrated-gradients steps (default {explain.STEPS})",
    )
    parser.add_argument(
        "--served-only", action="store_true", help="skip the two methods served before"
    )
    args = parser.parse_args()
    if args.ig_steps < 1 or args.steps < 1:
        parser.error("--steps and --ig-steps must be at least 1")
    torch.set_num_threads(1)  # the test's setting: faster than two on 2 shared cores
    print(f"task {args.task}, {args.steps} steps, Adam {args.lr:g}; per class in brackets")
    compared = methods(args.ig_steps, args.served_only)
    for seed in args.seeds:
        print(measure(args.task, seed, args.steps, args.lr, compared), flush=True)


if __name__ == "__main__":
    main()
