"""GPU copies of a CPU index, and IVF coarse k-means on the GPU.

With ``use_gpu`` (default: ``faiss.get_num_gpus() > 0``) the CPU index stays the source of
truth (it is what is saved, and add/remove change it) and a GPU copy — sharded over all GPUs
when there are several — answers searches; after add/remove the copy is made again. FAISS
has no GPU HNSW, so graph indexes stay on the CPU (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import faiss

from indexer.vectors import anatomy
from indexer.vectors.arrays import FloatArray
from indexer.vectors.errors import VectorIndexError

logger = logging.getLogger(__name__)

GPU_MAX_K = 2048
"""Largest k a FAISS GPU index returns in one search."""


def gpu_count() -> int:
    """How many GPUs FAISS sees (0 with the CPU-only build)."""
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return int(get_num_gpus()) if get_num_gpus is not None else 0


def resolve_use_gpu(use_gpu: bool | None) -> bool:
    """None → use the GPU(s) when FAISS sees any; True without a GPU is an error."""
    count = gpu_count()
    if use_gpu is None:
        return count > 0
    if use_gpu and count == 0:
        raise VectorIndexError("use_gpu=True but FAISS sees no GPU (is faiss-gpu installed?)")
    return use_gpu


def gpu_copy(index: Any, search_params: Mapping[str, int | float], *, required: bool) -> Any:
    """A copy of CPU ``index`` on all GPUs (sharded when several), or None where unsupported."""
    if anatomy.kind(index) == "graph":
        logger.info("FAISS has no GPU HNSW; searching this graph index on the CPU")
        return None
    count = gpu_count()
    try:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = count > 1
        gpu_index = faiss.index_cpu_to_all_gpus(index, co=options, ngpu=count)
        space = faiss.GpuParameterSpace()
        for name, value in search_params.items():
            space.set_index_parameter(gpu_index, name, float(value))
    except (RuntimeError, AttributeError) as err:
        if required:
            raise VectorIndexError(f"cannot move this index to the GPU: {err}") from err
        logger.info("keeping the index on the CPU: %s", err)
        return None
    logger.info("index copied to %d GPU(s)%s", count, " (sharded)" if count > 1 else "")
    return gpu_index


def train_on_gpu_if_possible(index: Any, sample: FloatArray) -> bool:
    """Train ``index`` with its IVF coarse k-means on the GPU(s); False if not attempted."""
    ivf = anatomy.ivf(index)
    if ivf is None or ivf.is_trained:
        return False
    try:
        clustering = faiss.index_cpu_to_all_gpus(faiss.IndexFlat(ivf.d, ivf.metric_type))
    except (RuntimeError, AttributeError) as err:
        logger.info("coarse k-means on the CPU: %s", err)
        return False
    ivf.clustering_index = clustering
    try:
        index.train(sample)
    finally:
        ivf.clustering_index = None
    return True
