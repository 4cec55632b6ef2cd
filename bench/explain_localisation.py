"""Does the class map point at the pattern? Two explanation methods, several training seeds.

    python bench/explain_localisation.py [--task two|three] [--seeds 0 1 2 3]
                                         [--steps 1200] [--lr 3e-4]

The localisation check of ``tests/model/test_explain_honesty.py``, per seed and per class,
for the served method and one alternative. A tiny multi-scale ViT (2 blocks, 64 wide,
8-px patches on 64-px canvases) is trained with Adam on generated canvases
(``tests/support/explain_data.py``: grey noise, a yellow striped distractor, the
class-determining striped square at a random place):

* ``two``: the test's task, a red square (class 0) or a green one (class 1). A model may
  detect one colour and explain the other class by its absence;
* ``three``: a red square (0), a blue one (1, the channel the yellow distractor lacks) or
  none (2, distractor only), so that both pattern classes need evidence of their own;
  only the pattern classes are measured.

For each held-out canvas of a pattern class the class map of its true class is taken
two ways — gradient × input on the tokens (``model.explain.explain_class``, what
``/explain`` serves) and the L2 norm of the token gradient — and the script prints the
share of canvases whose map peaks on a cell touching the pattern's box, in all and per
class (a uniform random map: ≈ 0.125), and the held-out accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # the project's packages first,
sys.path.append(str(REPO / "tests"))  # then the generated canvases

from imaging.preprocessing import PreprocessConfig, normalise  # noqa: E402
from model.architectures import build_model  # noqa: E402
from model.config import ModelConfig  # noqa: E402
from model.explain import _tokens_of, explain_class, fold_scales  # noqa: E402
from model.vit import MultiScaleViT  # noqa: E402
from support.explain_data import _paint, cells_touching, pattern_images  # noqa: E402

CANVAS, PATCH, PATTERN = 64, 8, 16
CPU = torch.device("cpu")
PRE = PreprocessConfig(image_size=(CANVAS, CANVAS))


def canvases(count: int, seed: int, task: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(canvases, labels, pattern boxes) of the ``task`` (module docstring)."""
    base = pattern_images(count, seed, canvas=CANVAS, pattern=PATTERN)
    if task == "two":
        return base.canvases, base.labels, base.boxes
    rng = np.random.default_rng(seed + 100)
    labels = np.arange(count) % 3
    pixels = base.canvases.permute(0, 2, 3, 1).numpy().copy()
    for i, label in enumerate(labels):
        top, left, bottom, right = base.boxes[i]
        noise = rng.integers(0, 140, size=(bottom - top, right - left, 3), dtype=np.uint8)
        pixels[i, top:bottom, left:right] = noise  # the pattern erased …
        if label < 2:  # … and painted again, red or blue
            _paint(pixels[i], (int(top), int(left)), PATTERN, [0] if label == 0 else [2])
    out = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return out, torch.from_numpy(labels).long(), base.boxes


def trained(task: str, seed: int, steps: int, lr: float) -> MultiScaleViT:
    images, labels, _ = canvases(1024 if task == "two" else 1536, 1, task)  # two: the test's
    inputs = normalise(images, PRE)
    torch.manual_seed(seed)
    classes = 2 if task == "two" else 3
    cfg = ModelConfig.from_variant(
        "tiny", num_classes=classes, depth=2, width=64, heads=2, embed_dim=64,
        patch_size=PATCH, image_size=CANVAS, dropout=0.0,
    )  # fmt: skip
    network = build_model(cfg)
    assert isinstance(network, MultiScaleViT)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    batches = torch.Generator().manual_seed(0)
    network.train()
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (32,), generator=batches)
        loss = torch.nn.functional.cross_entropy(network(inputs[batch]).logits, labels[batch])
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    return network.eval()


def gradient_norm_map(network: MultiScaleViT, canvas: torch.Tensor, label: int) -> np.ndarray:
    with torch.enable_grad():
        tokens = _tokens_of(network, canvas.unsqueeze(0), PRE, CPU)
        features = network.features_from_tokens(tokens)
        logit = network.classifier(network.embed_head(features))[0, label]
        grads = torch.autograd.grad(logit, tokens)
    return fold_scales([g[0].norm(dim=-1) for g in grads], (CANVAS, CANVAS), PATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=("two", "three"), default="three")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the test's setting: faster than two on 2 shared cores
    held, labels, boxes = canvases(100 if args.task == "two" else 150, 2, args.task)
    print(f"task {args.task}, {args.steps} steps, Adam {args.lr:g}; peak inside: all (per class)")
    for seed in args.seeds:
        network = trained(args.task, seed, args.steps, args.lr)
        with torch.no_grad():
            predicted = network(normalise(held, PRE)).logits.argmax(-1)
        accuracy = float((predicted == labels).float().mean())
        hits: dict[str, dict[int, list[bool]]] = {"gradient × input": {}, "gradient norm": {}}
        for i, label in enumerate(labels.tolist()):
            if label > 1:  # "no pattern": nothing to point at
                continue
            inside = cells_touching(boxes[i], (CANVAS // PATCH, CANVAS // PATCH), PATCH)
            maps = {
                "gradient × input": explain_class(network, held[i], PRE, CPU, label),
                "gradient norm": gradient_norm_map(network, held[i], label),
            }
            for name, grid in maps.items():
                peak = grid.max() > 0 and inside[np.unravel_index(int(grid.argmax()), grid.shape)]
                hits[name].setdefault(label, []).append(bool(peak))
        parts = []
        for name, per_class in hits.items():
            every = [h for values in per_class.values() for h in values]
            classes = " / ".join(f"{np.mean(v):.2f}" for _, v in sorted(per_class.items()))
            parts.append(f"{name} {np.mean(every):.2f} ({classes})")
        print(f"seed {seed}: accuracy {accuracy:.2f}; " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
