"""Indexing throughput against the bare model's batched forward, side by side.

    python bench/index_speed.py [--data ../shared/data/ham10000] [--variant small --depth 12
                                 --size 224] [--batch 64] [--workers 2] [--limit 2000]

(a) of the indexer issue: the indexer's embedding stage (read bytes, hash, decode,
letterbox in DataLoader workers; normalise + forward in the main process) over real
images, against the same model's forward on an already-prepared batch of the same size.
The ratio says whether decoding hides behind compute (goal ≥ 0.85). Rounds alternate
between the two so that machine noise hits both; medians are printed. The model has
random weights (speed does not depend on them). Also prints the whole ``index`` run
(embedding + FAISS + SQL) for one round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from archives.content import load_pixels
from archives.registry import read_archive
from imaging.preprocessing import PreprocessConfig, fit_to_canvas
from indexer.builder import IndexBuilder, IndexerConfig
from indexer.embedding import embed_samples
from indexer.group_keys import generate_group_salt
from indexer.store import MetadataStore
from labels import LabelSpace
from model.architectures import build_model
from model.checkpoint import CheckpointMeta, save_checkpoint
from model.config import ModelConfig
from model.inference import infer

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/ham10000")
    parser.add_argument("--variant", default="small")
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=1024, help="images per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--whole-run",
        action="store_true",
        help="also time one whole 'index' build over the full archive",
    )
    args = parser.parse_args()

    archive = read_archive(args.data)
    samples = list(archive.samples[: args.limit])
    cfg = ModelConfig.from_variant(
        args.variant, num_classes=len(archive.codes), depth=args.depth, image_size=args.size
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    pre = PreprocessConfig(image_size=(args.size, args.size))
    device = torch.device("cpu")
    batch = torch.stack(
        [fit_to_canvas(load_pixels(s), pre.image_size) for s in samples[: args.batch]]
    )

    def bare() -> float:
        n_batches = max(1, len(samples) // args.batch)
        start = time.perf_counter()
        for _ in range(n_batches):
            infer(model, batch, pre, device)  # the forward the indexer runs, nothing else
        return n_batches * args.batch / (time.perf_counter() - start)

    def indexing() -> float:
        result = embed_samples(
            model,
            pre,
            samples,
            device=device,
            batch_size=args.batch,
            workers=args.workers,
            progress=False,
        )
        return len(result.indices) / result.seconds

    bare()  # warm-up
    bare_rates, index_rates = [], []
    for _ in range(args.rounds):
        bare_rates.append(bare())
        index_rates.append(indexing())
    b, i = statistics.median(bare_rates), statistics.median(index_rates)
    print(
        f"{cfg.variant} depth {cfg.depth} @ {args.size}px, batch {args.batch}, "
        f"{args.workers} decode workers, {len(samples)} images of {args.data.name}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print("| stage | images/s (median) |\n|---|---:|")
    print(f"| bare batched forward | {b:.1f} |")
    print(f"| indexer embedding (decode + letterbox + forward) | {i:.1f} |")
    print(f"ratio indexing / bare: {i / b:.3f} (goal >= 0.85)")

    if not args.whole_run:
        return
    with tempfile.TemporaryDirectory() as tmp:
        meta = CheckpointMeta(
            model=cfg, labels=LabelSpace.from_codes(archive.codes), preprocessing=pre
        )
        save_checkpoint(Path(tmp) / "m.safetensors", model, meta)
        store = MetadataStore.open(f"sqlite:///{tmp}/medret.db")
        builder = IndexBuilder(
            store,
            IndexerConfig(
                data_dir=Path(tmp) / "data",
                group_salt=generate_group_salt(),  # a throwaway database
                batch_size=args.batch,
                workers=args.workers,
                progress=False,
            ),
        )
        start = time.perf_counter()
        result = builder.build("bench", Path(tmp) / "m.safetensors", args.data)
        total = time.perf_counter() - start
        store.close()
    print(
        f"whole index run over {args.data.name}: {result.added} cases in {total:.1f} s "
        f"= {result.added / total:.1f} images/s (embedding, FAISS {result.factory}, SQL)"
    )


if __name__ == "__main__":
    main()
