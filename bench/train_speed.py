"""Training-step throughput: forward + multi-loss + backward + Adam, on random batches.

    python bench/train_speed.py                       # the CPU recipe (tiny, 4 blocks, 96 px)
    python bench/train_speed.py --variant small --depth 12 --size 224 --batch 256 --device cuda

Prints images/s (median of --rounds timed rounds after warm-up). On CUDA it runs under
bf16 autocast and also prints the achieved model FLOP/s as a fraction of the GPU's dense
bf16 peak (``--peak-tflops``; 989 for an H100/H200 SXM). FLOPs per image are counted as
3 × (forward multiply-accumulates × 2): forward once, backward twice.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from labels import Task
from model.architectures import build_model
from model.config import ModelConfig
from model.device import autocast
from model.vit import token_counts
from training.losses import LossWeights, MultiLoss
from training.schedule import make_adam


def forward_macs(cfg: ModelConfig, size: int) -> float:
    n = sum(token_counts(size, size, multiscale=cfg.multiscale)) + 1
    blocks = cfg.depth * (12 * n * cfg.width**2 + 2 * n * n * cfg.width)
    patches = (n - 1) * cfg.width * 3 * cfg.patch_size**2
    return float(blocks + patches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = parser.parse_args()

    device = torch.device(args.device)
    cfg = ModelConfig.from_variant(
        args.variant, num_classes=7, depth=args.depth, image_size=args.size, task=Task.SINGLE_LABEL
    )
    model = build_model(cfg).to(device).train()
    step_model = torch.compile(model) if args.compile else model
    loss_fn = MultiLoss(Task.SINGLE_LABEL)
    weights = LossWeights(ce=0.6, contrastive=0.6, triplet=0.6)
    opt = make_adam(model.parameters(), 4e-4)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.arange(args.batch, device=device) % 7
    cast = autocast(device, bf16=True)

    def step() -> None:
        with cast:
            out = step_model(x)
        loss = loss_fn(type(out)(out.embedding.float(), out.logits.float()), y, weights).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    sync()
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        rates.append(args.batch * args.steps / (time.perf_counter() - start))
    rate = statistics.median(rates)
    print(
        f"{args.variant} depth {cfg.depth}, {args.size}px, batch {args.batch}, {device}: "
        f"{rate:.1f} images/s (median of {args.rounds} rounds, min {min(rates):.1f}, "
        f"max {max(rates):.1f})"
    )
    if device.type == "cuda":
        flops = 3 * 2 * forward_macs(cfg, args.size) * rate
        print(
            f"model FLOP/s {flops / 1e12:.1f} T = {100 * flops / (args.peak_tflops * 1e12):.1f}% "
            f"of {args.peak_tflops:.0f} TFLOP/s bf16 peak ({torch.cuda.get_device_name()})"
        )


if __name__ == "__main__":
    main()
