"""CPU forward throughput of the model: multi-scale vs single-scale, side by side.

    python bench/model_speed.py [--variant small] [--size 224] [--batches 1 32] [--rounds 5]

For each batch size the two models are timed in alternating rounds (so that machine
noise hits both alike); the script prints the median images/s of each, their ratio, and
the ratio that the token counts and multiply-accumulate counts predict.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from model.architectures import Network, build_model
from model.config import ModelConfig
from model.vit import token_counts


def macs_per_image(cfg: ModelConfig, tokens: int) -> float:
    """Multiply-accumulates of the encoder: 12·N·D² for the linear layers + 2·N²·D attention."""
    n = tokens + 1
    return cfg.depth * (12 * n * cfg.width**2 + 2 * n * n * cfg.width)


def time_forward(model: Network, batch: torch.Tensor, iters: int) -> float:
    """Seconds per forward pass (mean over ``iters`` after one warm-up)."""
    with torch.inference_mode():
        model(batch)
        start = time.perf_counter()
        for _ in range(iters):
            model(batch)
        return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="small")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    models = {
        name: build_model(
            ModelConfig.from_variant(
                args.variant, num_classes=7, multiscale=multiscale, image_size=args.size
            )
        ).eval()
        for name, multiscale in (("multi-scale", True), ("single-scale", False))
    }
    tokens = {
        name: sum(token_counts(args.size, args.size, multiscale=m.cfg.multiscale))
        for name, m in models.items()
    }
    cfg = models["multi-scale"].cfg
    print(
        f"variant {args.variant} ({cfg.width} wide, {cfg.depth} blocks), {args.size}x{args.size}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}"
    )
    print(f"tokens: multi-scale {tokens['multi-scale']}, single-scale {tokens['single-scale']}")
    predicted = macs_per_image(cfg, tokens["multi-scale"]) / macs_per_image(
        cfg, tokens["single-scale"]
    )
    print(f"predicted cost ratio from MACs: {predicted:.3f}")
    print(f"{'batch':>5} {'multi img/s':>12} {'single img/s':>13} {'cost ratio':>11}")
    for batch_size in args.batches:
        batch = torch.randn(batch_size, 3, args.size, args.size)
        iters = max(1, 32 // batch_size)
        samples: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                samples[name].append(batch_size / time_forward(model, batch, iters))
        multi = statistics.median(samples["multi-scale"])
        single = statistics.median(samples["single-scale"])
        print(f"{batch_size:>5} {multi:>12.1f} {single:>13.1f} {single / multi:>11.3f}")


if __name__ == "__main__":
    main()
