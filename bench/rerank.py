"""Does re-ranking pay? Query expansion and database-side augmentation, with and without.

    python bench/rerank.py --checkpoint runs/quality/teacher/best.safetensors
                           [--data ../shared/data/ham10000] [--cache DIR]

The same embeddings as ``bench/score_figures.py`` (train split = gallery; validation and
test splits = queries; cached per checkpoint), in the space the index searches by default
(centred on the gallery mean) and raw. For each it prints macro mAP and macro P@10 of:

* the plain ranking;
* α-query expansion (Radenović et al. 2018): the query is replaced by the normalised sum
  of itself and its top-k neighbours weighted by ``max(0, cosine)^α`` (α = 3), then
  searched again;
* database-side augmentation (DBA): every gallery vector is replaced, once, by the same
  weighted sum over its own top-k neighbours (itself included);
* both.

The decision (on by default or not) is made on the validation rows; the test rows are
reported.
"""

from __future__ import annotations

import numpy as np
from score_figures import embedded, parse_arguments

from archives.records import Sample
from labels import Task
from metrics.retrieval import rank_gallery, retrieval_scores

ALPHA = 3.0
KS = (2, 3, 5, 10)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def expanded(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """α-QE (or, with ``queries is gallery``, DBA): each row plus its weighted top-k."""
    scores = queries @ gallery.T
    top = np.argsort(-scores, axis=1)[:, :k]
    weights = np.take_along_axis(scores, top, axis=1).clip(0) ** ALPHA
    return unit(queries + (weights[..., None] * gallery[top]).sum(axis=1))


def macro(
    queries: np.ndarray,
    gallery: np.ndarray,
    q_targets: np.ndarray,
    g_targets: np.ndarray,
    codes: list[str],
) -> str:
    ranking = rank_gallery(queries, gallery)
    found = retrieval_scores(
        q_targets, g_targets, ranking, task=Task.SINGLE_LABEL, codes=codes, ks=(10,)
    )
    return f"mAP {found.macro['mAP']:.4f} P@10 {found.macro['P@10']:.4f}"


def main() -> None:
    args = parse_arguments(__doc__)
    splits = embedded(args.checkpoint, args.data, args.cache)
    gallery, g_samples = splits["train"].vectors, splits["train"].samples
    codes = sorted({s.labels[0] for s in g_samples if s.labels})
    index = {c: i for i, c in enumerate(codes)}

    def targets(samples: list[Sample]) -> np.ndarray:
        return np.asarray([index[s.labels[0]] for s in samples])

    g_targets = targets(g_samples)
    mean = gallery.mean(axis=0)
    for space in ("centred", "raw"):
        g = unit(gallery - mean) if space == "centred" else gallery
        for split in ("val", "test"):
            vectors, samples = splits[split].vectors, splits[split].samples
            q = unit(vectors - mean) if space == "centred" else vectors
            t = targets(samples)
            print(f"{split:4s} {space:7s} plain           {macro(q, g, t, g_targets, codes)}")
            for k in KS:
                dba = expanded(g, g, k)
                print(
                    f"{split:4s} {space:7s} k={k:<2d} α-QE      "
                    f"{macro(expanded(q, g, k), g, t, g_targets, codes)} | DBA "
                    f"{macro(q, dba, t, g_targets, codes)} | both "
                    f"{macro(expanded(q, dba, k), dba, t, g_targets, codes)}"
                )


if __name__ == "__main__":
    main()
