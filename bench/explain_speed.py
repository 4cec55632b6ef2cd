"""Cost of an explanation against a query's embed time, on the CPU, side by side.

    python bench/explain_speed.py [--rounds 7] [--threads 2] [--steps 4]

For the CPU recipe (tiny, 4 blocks, 96 px; ``configs/cpu_recipe.yaml``), the quality
recipe's hybrid student (EfficientNet-Lite0 stem, tiny, 4 blocks, 128 px;
``configs/student_cpu.yaml``) and the small 224-px model, freshly initialised, one random
query canvas and one random case canvas:

* embed: :func:`model.inference.infer` of the query (what ``POST /query`` spends on it);
* one map: :func:`model.explain.explain_class` (integrated gradients: the encoder's
  forward and backward over ``--steps`` path points of one canvas);
* explanation: what ``POST /explain`` spends beyond the query's embed: a
  :class:`model.explain.QueryExplainer` given the query's embedding, both maps of one
  query/case pair and the query's class map;
* explain=1, explain=4: what ``POST /query?explain=N`` spends on its maps for 1 and for 4
  cases (the query's side is prepared once per request), and from the two, what each
  case after the first adds.

The pieces are timed in alternating rounds (machine noise hits them alike); the script
prints the median seconds of each and their ratio to the embed time.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from imaging.preprocessing import PreprocessConfig
from model.architectures import build_model
from model.config import ModelConfig
from model.explain import STEPS, QueryExplainer, explain_class
from model.inference import infer
from model.vit import MultiScaleViT

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def recipe_config(name: str) -> ModelConfig:
    """The model a training config of configs/ describes (its weights' source left out)."""
    model = dict(yaml.safe_load((CONFIGS / name).read_text())["model"])
    model.pop("pretrained", None)
    return ModelConfig.from_variant(model.pop("variant"), num_classes=7, **model)


def median_seconds(work: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median wall time of each piece of work, timed in alternating rounds after a warm-up."""
    for run in work.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(rounds):
        for name, run in work.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def bench(name: str, cfg: ModelConfig, rounds: int, steps: int) -> None:
    torch.manual_seed(0)
    network = build_model(cfg).eval()
    assert isinstance(network, MultiScaleViT)
    prep = PreprocessConfig(image_size=cfg.image_size)
    cpu = torch.device("cpu")
    h, w = cfg.image_size
    query = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    case = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    embedding = infer(network, query.unsqueeze(0), prep, cpu).embeddings[0]

    def explainer() -> QueryExplainer:
        return QueryExplainer(network, query, prep, cpu, steps=steps, query_embedding=embedding)

    def explanation() -> object:
        prepared = explainer()
        return prepared.similarity(case), prepared.class_map(0)

    cases = [case, *(torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for _ in range(3))]

    def hits(count: int) -> object:
        prepared = explainer()
        return [prepared.similarity(one) for one in cases[:count]]

    work: dict[str, Callable[[], object]] = {
        "embed": lambda: infer(network, query.unsqueeze(0), prep, cpu),
        "one map": lambda: explain_class(network, query, prep, cpu, 0, steps=steps),
        "explanation": explanation,
        "explain=1": lambda: hits(1),
        "explain=4": lambda: hits(4),
    }
    seconds = median_seconds(work, rounds)
    stem = "" if cfg.stem == "patch" else f", {cfg.stem} stem"
    print(f"{name}: {cfg.variant}, {cfg.depth} blocks, {cfg.width} wide{stem}, {h}x{w}")
    print(f"  {'':<13} {'median ms':>10} {'× embed':>8}")
    seconds["each further"] = (seconds["explain=4"] - seconds["explain=1"]) / 3
    for piece, value in seconds.items():
        print(f"  {piece:<13} {value * 1e3:>10.1f} {value / seconds['embed']:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--steps",
        type=int,
        default=STEPS,
        help=f"integrated-gradients steps (default {STEPS}, what the service uses)",
    )
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, {args.rounds} rounds, "
        f"{args.steps} integrated-gradients steps"
    )
    bench("CPU recipe", recipe_config("cpu_recipe.yaml"), args.rounds, args.steps)
    student = recipe_config("student_cpu.yaml")
    bench("quality recipe's hybrid student", student, args.rounds, args.steps)
    small = ModelConfig.from_variant("small", num_classes=7)
    bench("small 224 px", small, args.rounds, args.steps)


if __name__ == "__main__":
    main()
