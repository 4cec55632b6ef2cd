"""Does the label-aware ranking pay? The cosine against the cosine + λ × log prior.

    python bench/label_ranking.py --checkpoint runs/quality/student/best.safetensors
                                  [--data ../shared/data/ham10000] [--cache DIR]

The embeddings and logits of ``bench/score_figures.py`` (cached per checkpoint and split).
λ is chosen exactly as ``medret index`` chooses it (:func:`indexer.scores.label_ranking`)
for a version holding the train and validation splits, centred on its mean: its queries
are then the validation cases, so the choice never sees the test split. The script
prints the held-out figures the choice was made on, then for the validation and the test
queries against the train split (the gallery of the other benchmarks), centred on the
train mean as an index of the archive would be:

* macro mAP and macro P@10 of the plain ranking and of the label-aware one;
* the share of same-diagnosis cases at ranks 1, 5 and 10 (micro and macro over the
  query's class): a calibrated score can fall from rank 1 to rank 10 by no more than
  this share does, which bounds the median rank-1 − rank-10 gap of any probability;
* the served probability's median rank-1 − rank-10 gap under each ranking.
"""

from __future__ import annotations

import numpy as np
import torch
from score_figures import embedded, fitted_table, parse_arguments

from indexer.calibration import label_targets
from indexer.label_ranking import case_classes, log_priors
from indexer.scores import CaseLabels, Predicted, label_ranking
from indexer.vectors.space import centre_of, centred
from labels import Task
from metrics.retrieval import relevance_matrix, retrieval_scores
from model.checkpoint import load_checkpoint
from model.vit import probabilities


def main() -> None:
    args = parse_arguments(__doc__)
    meta = load_checkpoint(args.checkpoint, torch.device("cpu")).meta
    task, codes = Task(meta.model.task), list(meta.labels.codes)
    splits = embedded(args.checkpoint, args.data, args.cache)
    prob = {k: probabilities(torch.from_numpy(v.logits), task).numpy() for k, v in splits.items()}

    train, val = splits["train"], splits["val"]
    version = [*train.samples, *val.samples]
    raw = np.concatenate([train.vectors, val.vectors])
    ids = np.arange(len(version), dtype=np.int64)
    cases = CaseLabels(
        labels=[tuple(s.labels) for s in version],
        groups=[s.group for s in version],
        labelled=[bool(s.labels) or task is Task.MULTI_LABEL for s in version],
        held_out=[s.split != "train" for s in version],
    )
    version_probs = np.concatenate([prob["train"], prob["val"]])
    predicted = Predicted({int(i): version_probs[i] for i in ids}, codes)
    chosen = label_ranking(centred(raw, centre_of(raw)), ids, cases, task, predicted)
    print(f"λ chosen on {chosen.queries} validation queries of a train + val version:")
    print("   λ     macro P@10  macro AP@100")
    for weight, p10, ap in chosen.figures:
        mark = "  ← chosen" if weight == chosen.weight else ""
        print(f"  {weight:<5g} {p10:10.4f} {ap:12.4f}{mark}")

    table = fitted_table(centred(raw, centre_of(raw)), version, task, raw=raw)
    gallery_labels = [s.labels for s in train.samples]
    centre = centre_of(train.vectors)
    gallery = centred(train.vectors, centre)
    g_classes = case_classes(gallery_labels, [True] * len(gallery_labels), codes, task)
    print(
        f"\n{'split':5s} {'ranking':24s} {'mAP':>7s} {'P@10':>7s}  same at rank 1/5/10 "
        "(micro | macro)          P(match) gap 1-10"
    )
    for split in ("val", "test"):
        queries = splits[split]
        both = label_targets([s.labels for s in queries.samples] + gallery_labels, task)
        targets, g_targets = both[: len(queries.samples)], both[len(queries.samples) :]
        width = int(both.max()) + 1 if task is Task.SINGLE_LABEL else both.shape[1]
        cosines = centred(queries.vectors, centre) @ gallery.T
        relevant = relevance_matrix(targets, g_targets, task)
        matched = table.predict(queries.vectors @ train.vectors.T)
        priors = log_priors(prob[split], g_classes, task)
        for name, weight in (
            ("cosine", 0.0),
            (f"cosine + {chosen.weight:g} log prior", chosen.weight),
        ):
            ranking = np.argsort(-(cosines + weight * priors), axis=1, kind="stable")
            found = retrieval_scores(
                targets,
                g_targets,
                ranking,
                task=task,
                codes=[str(c) for c in range(width)],
                ks=(10,),
            )
            same = np.take_along_axis(relevant, ranking[:, :10], axis=1)
            classes = targets if task is Task.SINGLE_LABEL else targets.argmax(axis=1)
            macro = np.mean([same[classes == c].mean(axis=0) for c in np.unique(classes)], axis=0)
            shown = np.take_along_axis(matched, ranking[:, :10], axis=1)
            gap = float(np.median(shown[:, 0] - shown[:, 9]))
            print(
                f"{split:5s} {name:24s} {found.macro['mAP']:7.4f} {found.macro['P@10']:7.4f}  "
                f"{same.mean(axis=0)[0]:.3f} {same.mean(axis=0)[4]:.3f} {same.mean(axis=0)[9]:.3f}"
                f" | {macro[0]:.3f} {macro[4]:.3f} {macro[9]:.3f}      {gap:8.4f}"
            )


if __name__ == "__main__":
    main()
