"""Model randomisation on real images: do a trained model's maps differ from a fresh one's?

    python bench/explain_randomisation.py --checkpoint runs/quality/student/best.safetensors
                                          [--data ../shared/data/ham10000] [--count 40]

The check of Adebayo et al. (2018, "Sanity checks for saliency maps") on the first
``--count`` test-split images of ``--data``, decoded and letterboxed as the service does:
for each, the class map (``model.explain.explain_class``) of the trained model's
predicted class, and the same class's map from the same architecture with freshly
initialised weights (``torch.manual_seed(0)``). Prints the Spearman rank correlation of
the two over the grid (mean, median, largest; < 0.5 on average passes), and where each
model's map peaks: the share of images whose peak lies on a cell of the letterbox margin
(the rows or columns the image does not cover) — a strongly negative correlation can mean
that one of the two looks at the margins.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # the project's packages first,
sys.path.append(str(REPO / "tests"))  # then the map measures

from archives.records import ArchiveError  # noqa: E402
from archives.registry import read_archive  # noqa: E402
from imaging.decode import decode_file  # noqa: E402
from imaging.limits import DEFAULT_LIMITS  # noqa: E402
from imaging.preprocessing import fit_to_canvas, letterbox_geometry  # noqa: E402
from model.architectures import build_model  # noqa: E402
from model.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from model.explain import explain_class  # noqa: E402
from model.inference import infer  # noqa: E402
from model.vit import MultiScaleViT  # noqa: E402
from support.saliency import spearman  # noqa: E402


def margin_cells(height: int, width: int, size: tuple[int, int], patch: int) -> np.ndarray:
    """(rows, cols) bool: the cells no pixel of the image reaches after letterboxing."""
    new_h, new_w, top, left = letterbox_geometry(height, width, size)
    rows = np.arange(size[0] // patch) * patch
    cols = np.arange(size[1] // patch) * patch
    in_rows = (rows + patch > top) & (rows < top + new_h)
    in_cols = (cols + patch > left) & (cols < left + new_w)
    return ~(in_rows[:, None] & in_cols[None, :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ham10000")
    parser.add_argument("--count", type=int, default=40)
    args = parser.parse_args()
    if args.count < 1:
        parser.error(f"--count must be at least 1, got {args.count}")
    torch.set_num_threads(2)
    cpu = torch.device("cpu")
    try:
        loaded = load_checkpoint(args.checkpoint, cpu)
        archive = read_archive(args.data)
    except (CheckpointError, ArchiveError) as exc:
        raise SystemExit(f"explain_randomisation: {exc}") from None
    network, meta = loaded.model.eval(), loaded.meta
    if not isinstance(network, MultiScaleViT):
        raise SystemExit(f"{args.checkpoint} is not a multi-scale ViT: nothing to explain")
    torch.manual_seed(0)
    fresh = build_model(meta.model).eval()
    assert isinstance(fresh, MultiScaleViT)
    samples = [s for s in archive.samples if s.split == "test"][: args.count]
    if not samples:
        raise SystemExit(f"{args.data} has no test-split image")
    size, patch = meta.preprocessing.image_size, meta.model.patch_size
    correlations, on_margin = [], {"trained": 0, "re-initialised": 0}
    for sample in samples:
        assert sample.path is not None
        pixels = decode_file(sample.path, DEFAULT_LIMITS).pixels
        canvas = fit_to_canvas(pixels, size)
        predicted = int(
            infer(network, canvas.unsqueeze(0), meta.preprocessing, cpu).logits.argmax()
        )
        maps = {
            "trained": explain_class(network, canvas, meta.preprocessing, cpu, predicted),
            "re-initialised": explain_class(fresh, canvas, meta.preprocessing, cpu, predicted),
        }
        correlations.append(spearman(maps["trained"], maps["re-initialised"]))
        margin = margin_cells(pixels.shape[0], pixels.shape[1], size, patch)
        for name, grid in maps.items():
            on_margin[name] += bool(margin[np.unravel_index(int(grid.argmax()), grid.shape)])
    values = np.array(correlations)
    print(f"{len(values)} test images of {args.data}, {args.checkpoint}")
    print(
        f"Spearman trained vs re-initialised: mean {values.mean():.2f}, median"
        f" {np.median(values):.2f}, largest {values.max():.2f}"
    )
    for name, count in on_margin.items():
        print(
            f"{name}: peak on a letterbox-margin cell for {count / len(values):.2f} of the images"
        )


if __name__ == "__main__":
    main()
