"""Evaluation reports of made-up embeddings: clustered by class, so the scores are known."""

from __future__ import annotations

from typing import Any

import numpy as np

from labels import Task
from training.evaluation import evaluate_embeddings

CODES = ["a", "b", "c"]
NAMES = ["alpha", "beta", "gamma"]


def clustered(
    rng: np.random.Generator, labels: np.ndarray, centres: np.ndarray, noise: float
) -> np.ndarray:
    """Unit vectors near ``centres[label]`` (Gaussian ``noise``), one per label."""
    points = centres[labels] + noise * rng.standard_normal((len(labels), centres.shape[1]))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def single_label_report(noise: float = 0.05, logit_noise: float = 0.0) -> dict[str, Any]:
    """Three unequal classes (gallery 30/20/10, queries 8/6/4) with the codes :data:`CODES`;
    small ``noise`` and no ``logit_noise`` retrieve and classify perfectly."""
    rng = np.random.default_rng(0)
    centres = np.eye(16)[:3]
    gallery_targets = np.repeat(np.arange(3), [30, 20, 10])  # unequal classes
    query_targets = np.repeat(np.arange(3), [8, 6, 4])
    query_emb = clustered(rng, query_targets, centres, noise)
    return evaluate_embeddings(
        query_emb=query_emb,
        query_targets=query_targets,
        query_probs=softmax(
            query_emb @ centres.T * 10 + logit_noise * rng.standard_normal((len(query_emb), 3))
        ),
        gallery_emb=clustered(rng, gallery_targets, centres, noise),
        gallery_targets=gallery_targets,
        task=Task.SINGLE_LABEL,
        codes=CODES,
        names=NAMES,
        knn_k=5,
    )
