"""Evaluation of a model: run it over a query and a gallery split, assemble the scores.

:func:`evaluate_split` embeds two splits of the pixel cache (:func:`embed_rows`, through
:func:`model.inference.infer`, in eval mode) and hands the arrays to
:func:`evaluate_embeddings`, which puts together the report:

* ``classification``: the model head's probabilities (:mod:`metrics.classification`);
* ``retrieval``: exact search of the queries against the gallery — inner products of the
  unit-norm embeddings with numpy, a block of queries at a time (no FAISS here:
  :mod:`training` must not depend on :mod:`indexer`) — scored by :mod:`metrics.retrieval`;
* ``knn_classification``: the classes voted by the retrieved neighbours (:mod:`metrics.knn`).

The metric definitions are in docs/training.md ("Evaluation"); :mod:`training.report`
writes the report files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from imaging.preprocessing import PreprocessConfig
from labels import Task
from metrics.classification import classification_metrics, task_name
from metrics.json_values import json_ready
from metrics.knn import knn_vote
from metrics.retrieval import (
    metric_names,
    per_query_metrics,
    ranking_chunks,
    summarise_retrieval,
)
from model.inference import infer
from model.vit import probabilities
from training.data import PreparedData
from training.distributed import unwrap
from training.pixel_cache import PixelCache, iterate_rows

__all__ = ["embed_rows", "evaluate_embeddings", "evaluate_split"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the model


def embed_rows(
    model: nn.Module,
    cache: PixelCache,
    rows: np.ndarray,
    pre: PreprocessConfig,
    device: torch.device,
    *,
    batch_size: int = 128,
    bf16: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, E) float32, logits (N, C) float32) of cached rows, in eval mode.

    The network is put back in the mode it was in.
    """
    net = unwrap(model)
    was_training = net.training
    net.eval()
    embs, logits = [], []
    try:
        for chunk in iterate_rows(rows, batch_size):
            out = infer(net, cache.batch(chunk), pre, device, bf16=bf16)
            embs.append(out.embeddings)
            logits.append(out.logits)
    finally:
        net.train(was_training)
    if not embs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return torch.cat(embs).numpy(), torch.cat(logits).numpy()


def evaluate_split(
    model: nn.Module,
    data: PreparedData,
    query: str,
    gallery: str,
    task: Task,
    pre: PreprocessConfig,
    device: torch.device,
    *,
    batch_size: int = 128,
    bf16: bool = True,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The full report of ``query`` split queries against a ``gallery`` split index.

    ``query == gallery`` (e.g. evaluating the training split against itself): each query
    must not retrieve itself. Also returns the arrays the report was computed from.
    """
    labels = data.archive.label_space()
    q, g = data.splits[query], data.splits[gallery]
    q_emb, q_logits = embed_rows(
        model, data.cache, q.rows, pre, device, batch_size=batch_size, bf16=bf16
    )
    g_emb = (
        q_emb
        if query == gallery
        else embed_rows(model, data.cache, g.rows, pre, device, batch_size=batch_size, bf16=bf16)[0]
    )
    probs = probabilities(torch.from_numpy(q_logits), task).numpy()
    report = evaluate_embeddings(
        query_emb=q_emb,
        query_targets=q.targets,
        query_probs=probs,
        gallery_emb=g_emb,
        gallery_targets=g.targets,
        task=task,
        codes=list(labels.codes),
        names=list(labels.names),
        exclude_self=query == gallery,
    )
    return report, {"query_emb": q_emb, "gallery_emb": g_emb, "probs": probs}


# --------------------------------------------------------------------------- the scores


def evaluate_embeddings(
    *,
    query_emb: npt.ArrayLike,
    query_targets: npt.ArrayLike,
    query_probs: npt.ArrayLike | None,
    gallery_emb: npt.ArrayLike,
    gallery_targets: npt.ArrayLike,
    task: Task,
    codes: Sequence[str],
    names: Sequence[str],
    ks: Sequence[int] = (2, 5, 10),
    knn_k: int = 10,
    exclude_self: bool = False,
    chunk: int = 256,
) -> dict[str, Any]:
    """Evaluate test queries against a gallery (the training set); the result is JSON-ready.

    Keys: ``task``, ``codes``, ``names``, ``classification`` (of ``query_probs``; omitted when
    None), ``retrieval`` (:class:`metrics.retrieval.RetrievalScores` as a dict),
    ``knn_classification`` (of the :func:`metrics.knn.knn_vote` scores with ``knn_k``
    neighbours) and ``counts``. ``exclude_self`` is for evaluating a set against itself.
    Queries are ranked ``chunk`` at a time: peak memory is a few ``chunk × gallery`` float64
    arrays (about 1 GB for 256 queries against ChestX-ray14's 86k training images).
    """
    q_targets = np.asarray(query_targets)
    g_targets = np.asarray(gallery_targets)
    q_emb = np.asarray(query_emb)
    num_queries = q_targets.shape[0]
    if q_emb.shape[0] != num_queries:
        raise ValueError(f"{q_emb.shape[0]} query embeddings but {num_queries} query targets")
    if np.asarray(gallery_emb).shape[0] != g_targets.shape[0]:
        raise ValueError("gallery embeddings and targets differ in length")
    per_query: dict[str, list[npt.NDArray[np.float64]]] = {n: [] for n in metric_names(ks)}
    knn_scores: list[npt.NDArray[np.float64]] = []
    for ranked in ranking_chunks(q_emb, gallery_emb, exclude_self=exclude_self, chunk=chunk):
        stop = ranked.start + ranked.indices.shape[0]
        values = per_query_metrics(
            q_targets[ranked.start : stop], g_targets, ranked.indices, task=task, ks=ks, chunk=chunk
        )
        for name, array in values.items():
            per_query[name].append(array)
        knn_scores.append(
            knn_vote(
                ranked.indices,
                g_targets,
                k=knn_k,
                num_classes=len(codes),
                task=task,
                similarities=ranked.similarities,
            )
        )
        logger.debug("retrieval evaluated for %d/%d queries", stop, num_queries)
    if not knn_scores:
        raise ValueError("no queries to evaluate")
    scores = summarise_retrieval(
        {name: np.concatenate(parts) for name, parts in per_query.items()},
        q_targets,
        task=task,
        codes=codes,
        ks=ks,
    )
    report: dict[str, Any] = {"task": task_name(task), "codes": list(codes), "names": list(names)}
    if query_probs is not None:
        report["classification"] = classification_metrics(
            query_probs, q_targets, task=task, codes=codes, names=names
        )
    report["retrieval"] = asdict(scores)
    report["knn_classification"] = classification_metrics(
        np.concatenate(knn_scores), q_targets, task=task, codes=codes, names=names
    )
    report["counts"] = {
        "queries": num_queries,
        "gallery": int(g_targets.shape[0]),
        "queries_without_relevant": scores.queries_without_relevant,
        "classes": len(codes),
        "knn_k": knn_k,
        "exclude_self": exclude_self,
    }
    logger.info(
        "evaluated %d queries against %d gallery items: mAP micro %.4f, macro %.4f",
        num_queries,
        g_targets.shape[0],
        scores.micro["mAP"],
        scores.macro["mAP"],
    )
    return json_ready(report)
