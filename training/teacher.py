"""The teacher's soft targets: its logits and embedding for every training image, once.

Distillation (the paper's L_distill, Hinton et al.) needs the teacher's logits for each
training image; geometry distillation (training/losses.py) its embeddings, centred on
their mean over the training images and renormalised. A teacher forward on every batch
would cost more than the student's own step on a CPU (a pretrained EfficientNet-Lite0 at
160 px against a 4-block ViT at 96 px), so they are computed once, before the first
epoch, on the un-augmented images — each at
the *teacher's* own canvas size and normalisation, through its own pixel cache and the one
inference function (:func:`model.inference.infer`), exactly as the teacher was trained and
would be served. Flips and rotations do not change a diagnosis, so the targets stay valid
for the augmented batches the student sees.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from archives.records import Sample
from labels import LabelSpace, Task
from model.checkpoint import LoadedCheckpoint, load_checkpoint
from model.inference import infer
from model.vit import ModelOutput
from training.config import TrainConfig
from training.distributed import SINGLE_PROCESS, DistEnv, barrier
from training.errors import TrainingError
from training.pixel_cache import PixelCache, iterate_rows

log = logging.getLogger(__name__)


def teacher_checkpoint(
    cfg: TrainConfig, labels: LabelSpace, task: Task, device: torch.device
) -> LoadedCheckpoint | None:
    """The checkpoint to distil from, in eval mode; None when no phase distils.

    It must predict the dataset's classes for the dataset's task.
    """
    if not cfg.loss.teacher:
        if any(p.distill > 0 or p.geometry > 0 for p in cfg.phases):
            raise TrainingError("a phase weights distillation but no loss.teacher is given")
        return None
    teacher = load_checkpoint(cfg.loss.teacher, device)
    if teacher.meta.labels.codes != labels.codes:
        raise TrainingError(
            f"the teacher {cfg.loss.teacher} predicts {list(teacher.meta.labels.codes)}, "
            f"the dataset has {list(labels.codes)}"
        )
    if teacher.meta.model.task is not task:
        raise TrainingError(
            f"the teacher is {teacher.meta.model.task.value}, the dataset is {task.value}"
        )
    teacher.model.eval()
    return teacher


@torch.inference_mode()
def soft_targets(
    teacher: LoadedCheckpoint,
    samples: Sequence[Sample],
    cfg: TrainConfig,
    device: torch.device,
    *,
    env: DistEnv = SINGLE_PROCESS,
    progress: bool = True,
) -> ModelOutput:
    """The teacher's logits (N, C) and centred unit embeddings (N, D), float32, for
    ``samples`` in their order (module doc).

    Rank 0 caches the images at the teacher's size; the other ranks wait, then look them
    up (as :func:`training.data.prepare_data` does for the student's cache).
    """
    started = time.perf_counter()
    size = teacher.meta.preprocessing.image_size
    cache = PixelCache(cfg.data.cache_dir, size)
    if env.is_main:
        rows, _ = cache.build(list(samples), workers=cfg.data.workers, progress=progress)
    barrier(env)
    if not env.is_main:
        cache = PixelCache(cfg.data.cache_dir, size)
        rows, _ = cache.lookup(list(samples), workers=cfg.data.workers)
    if len(rows) != len(samples) or (rows < 0).any():
        raise TrainingError("some training images could not be cached at the teacher's size")
    logits, embeddings = [], []
    for chunk in iterate_rows(np.asarray(rows), cfg.eval_batch_size):
        out = infer(
            teacher.model, cache.batch(chunk), teacher.meta.preprocessing, device, bf16=cfg.bf16
        )
        logits.append(out.logits.float().cpu())
        embeddings.append(out.embeddings.float().cpu())
    if not logits:
        raise TrainingError("there are no training images to compute the teacher's targets on")
    centred = torch.cat(embeddings)
    centred = torch.nn.functional.normalize(centred - centred.mean(dim=0), dim=1)
    log.info(
        "teacher soft targets for %d images at %dx%d in %.1f s",
        len(samples),
        size[0],
        size[1],
        time.perf_counter() - started,
    )
    return ModelOutput(embedding=centred, logits=torch.cat(logits))
