"""What a served score says: raw cosine, centred cosine and the calibrated match probability.

    python bench/score_figures.py --checkpoint runs/teacher/best.safetensors
                                  [--data ../shared/data/ham10000] [--cache DIR]

Embeds the train split (the gallery: what an index of the archive holds), the validation
split and the test split with :func:`indexer.embedding.embed_samples` (the indexer's one
inference path; cached in ``--cache`` per checkpoint and split), then prints, for the
raw cosine, the cosine after centring on the gallery mean (what ``medret index`` stores
by default) and the match probability fitted exactly as the indexer fits it
(:func:`indexer.calibration.fit_match_calibration`, leave-one-group-out) on a version
holding the train and validation splits: its queries are then the held-out validation
cases, so the probability's validation figures are in-sample and its test figures are
not:

* AUC of all query–gallery pairs' scores, same versus different diagnosis;
* the median over queries of the rank-1 minus rank-10 score;
* macro mAP and macro P@10 of the ranking (the probability ranks as its score does: the
  service sorts by score);
* for the probability, the mean probability of the top-10 pairs against their share of
  same-diagnosis cases, and the Brier score of the probability against that of the share.

The row "P(match) on raw cosine, ranked by centred cosine" is what the service serves: the
table fitted as the indexer now fits it (neighbours chosen by the centred cosine, read at
their raw cosine, ``reads: "raw cosine"``), read at each pair's raw cosine, with the cases
ranked by the centred cosine (its gap, mAP, P@10 and top-10 are those of that ranking; its
gap can be negative: the probability need not fall with the rank).

The choice (centre or not) is made on validation; the test split is reported.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from archives.records import Sample
from archives.registry import read_archive
from indexer.calibration import (
    RAW_COSINE,
    MatchCalibration,
    fit_match_calibration,
    label_targets,
)
from indexer.embedding import embed_samples
from indexer.vectors.space import centre_of, centred
from labels import Task
from metrics.retrieval import rank_gallery, relevance_matrix, retrieval_scores
from model.checkpoint import file_sha256, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")


def embedded(checkpoint: Path, data: Path, cache: Path) -> dict[str, Split]:
    """Split → its unit embeddings, samples and logits, from the cache or embedded now."""
    archive = read_archive(data)
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"scores-{file_sha256(checkpoint)[:16]}-{data.name}"
    loaded = None
    out: dict[str, Split] = {}
    for split in SPLITS:
        samples = archive.split(split)
        path = cache / f"{stem}-{split}.npz"
        logits = None
        if path.is_file():
            with np.load(path) as stored:
                vectors, keys = stored["vectors"], list(stored["keys"])
                logits = stored.get("logits")
        if not path.is_file() or logits is None:  # absent, or cached before the logits
            if loaded is None:
                loaded = load_checkpoint(checkpoint, torch.device("cpu"))
            result = embed_samples(
                loaded.model,
                loaded.meta.preprocessing,
                samples,
                device=torch.device("cpu"),
                workers=2,
                bf16=False,
            )
            vectors, logits = result.vectors, result.logits
            keys = [samples[i].key for i in result.indices]
            np.savez(path, vectors=vectors, keys=np.asarray(keys), logits=logits)
        by_key = {s.key: s for s in samples}
        chosen = [by_key[str(k)] for k in keys]
        out[split] = Split(np.asarray(vectors, np.float32), chosen, np.asarray(logits, np.float32))
    return out


class Split(NamedTuple):
    """One split embedded: unit vectors, their samples and the model's logits (rows alike)."""

    vectors: np.ndarray
    samples: list[Sample]
    logits: np.ndarray


def figures(
    scores: np.ndarray,
    relevant: np.ndarray,
    ranking: np.ndarray,
    targets: np.ndarray,
    gallery: np.ndarray,
    task: Task,
    codes: list[str],
) -> dict[str, float]:
    ranked = np.take_along_axis(scores, ranking, axis=1)
    retrieval = retrieval_scores(targets, gallery, ranking, task=task, codes=codes, ks=(10,))
    return {
        "AUC": float(roc_auc_score(relevant.ravel(), scores.ravel())),
        "gap": float(np.median(ranked[:, 0] - ranked[:, 9])),
        "mAP": retrieval.macro["mAP"],
        "P@10": retrieval.macro["P@10"],
    }


NAME = 48
HEADER = (
    f"{'split':5s} {'score':{NAME}s} {'AUC':>6s} {'gap 1-10':>9s} {'mAP':>6s} {'P@10':>6s}"
    "  top-10: mean p / same  Brier (of the share)"
)


def row(split: str, name: str, found: dict[str, float], extra: str = "") -> str:
    return (
        f"{split:5s} {name:{NAME}s} {found['AUC']:6.3f} {found['gap']:9.4f} {found['mAP']:6.3f} "
        f"{found['P@10']:6.3f}{extra}"
    )


def parse_arguments(doc: str) -> argparse.Namespace:
    """--checkpoint, --data and --cache, shared with bench/rerank.py (its first line of
    ``doc`` is the description)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ham10000")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "score-figures")
    args = parser.parse_args()
    torch.set_num_threads(2)
    return args


def main() -> None:
    args = parse_arguments(__doc__)
    task = Task(load_checkpoint(args.checkpoint, torch.device("cpu")).meta.model.task)
    splits = embedded(args.checkpoint, args.data, args.cache)
    gallery_vectors, gallery_samples = splits["train"].vectors, splits["train"].samples
    gallery_labels = [s.labels for s in gallery_samples]
    centre = centre_of(gallery_vectors)
    assert centre is not None
    norm = float(np.linalg.norm(centre))
    print(f"gallery: {len(gallery_samples)} train images; the norm of their mean is {norm:.3f}")
    print(HEADER)
    version = [*gallery_samples, *splits["val"].samples]  # an index of train + val
    raw_version = np.concatenate([gallery_vectors, splits["val"].vectors])
    for name, space_centre in {"raw cosine": None, "centred cosine": centre}.items():
        gallery = centred(gallery_vectors, space_centre)
        fitted = {"": fitted_table(centred(raw_version, space_centre), version, task)}
        if space_centre is not None:  # as the indexer fits it: read at the raw cosine
            fitted[", ranked by centred cosine"] = fitted_table(
                centred(raw_version, space_centre), version, task, raw=raw_version
            )
        for split in ("val", "test"):
            query_vectors, query_samples = splits[split].vectors, splits[split].samples
            both = label_targets([s.labels for s in query_samples] + gallery_labels, task)
            targets, gallery_targets = both[: len(query_samples)], both[len(query_samples) :]
            width = int(both.max()) + 1 if task is Task.SINGLE_LABEL else both.shape[1]
            codes = [str(c) for c in range(width)]
            queries = centred(query_vectors, space_centre)
            scores = queries @ gallery.T
            ranking = rank_gallery(queries, gallery)
            relevant = relevance_matrix(targets, gallery_targets, task)
            common = (relevant, ranking, targets, gallery_targets, task, codes)
            print(row(split, name, figures(scores, *common)))
            for suffix, table in fitted.items():
                reads_raw = table.reads == RAW_COSINE and space_centre is not None
                readings = query_vectors @ gallery_vectors.T if reads_raw else scores
                reading = "raw cosine" if reads_raw else name
                probability = table.predict(readings)
                top = np.take_along_axis(probability, ranking[:, :10], axis=1)
                same = np.take_along_axis(relevant, ranking[:, :10], axis=1)
                brier = float(np.mean((top - same) ** 2))
                base = float(np.mean((same.mean() - same) ** 2))
                found = figures(probability, *common)
                extra = f"  {top.mean():.3f} / {same.mean():.3f}  {brier:.4f} ({base:.4f})"
                print(row(split, f"P(match) on {reading}{suffix}", found, extra))
        for suffix, table in fitted.items():
            print(
                f"      table on {'raw cosine' + suffix if suffix else name}: "
                f"{len(table.scores)} breakpoints, "
                f"{table.pairs} pairs of {table.queries} queries ({table.queries_from}), "
                f"base rate {table.base_rate:.3f}, reads {table.reads}"
            )


def fitted_table(
    vectors: np.ndarray, version: list[Sample], task: Task, raw: np.ndarray | None = None
) -> MatchCalibration:
    """The table of a version of ``version`` searched in ``vectors``, fitted as the
    indexer fits it (``raw``: read at the raw cosine)."""
    table = fit_match_calibration(
        vectors,
        [s.labels for s in version],
        [s.group for s in version],
        task,
        held_out=[s.split != "train" for s in version],
        raw=raw,
    )
    assert table is not None
    return table


if __name__ == "__main__":
    main()
