"""The training loop: phased multi-loss, bf16 on CUDA, DDP under ``torchrun``, resumable.

One epoch, as it runs::

    sampler (P classes × K samples, sharded over ranks) → rows of the pixel cache
      → uint8 canvases to the device → augmentation on the device → ImageNet normalise
      → network (bf16 autocast on CUDA) → MultiLoss with this phase's weights → Adam
      (the learning rate follows the phase schedule step by step)
    then, on rank 0: embed the validation split and the training split, compute the
    validation metrics (classification, and retrieval of validation queries against the
    training gallery), append them to metrics.jsonl and TensorBoard, write the training
    state (state.pt) and, when the selection metric improved, best.safetensors.

:class:`Trainer` builds a run from its config in named steps (:mod:`training.distributed`,
:mod:`training.data`, :mod:`training.setup`); :mod:`training.state` saves and reloads it.
Resuming (``resume=True``) reloads state.pt: the weights, Adam's moments, the epoch, the
best score and the history; every random choice of an epoch (sampler order, augmentation,
dropout) is seeded from (seed, epoch, rank), so a resumed run repeats exactly the epochs
an uninterrupted run would have made. Only rank 0 logs and writes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from files.atomic import atomic_path
from imaging.preprocessing import normalise
from labels import LabelSpace, Task
from model.architectures import NETWORK_TYPES
from model.checkpoint import CheckpointMeta, save_checkpoint
from model.device import autocast
from model.vit import ModelOutput
from training.augment import augment_batch
from training.config import TrainConfig
from training.data import training_data
from training.distributed import (
    barrier,
    configure_process,
    distributed_env,
    distributed_model,
    end_process_group,
    finite_on_every_rank,
    rank0_flag,
    resolve_device,
)
from training.errors import TrainingError
from training.evaluation import evaluate_split
from training.report import headline
from training.schedule import set_lr
from training.setup import (
    batch_sampler,
    initial_network,
    optimizer,
    phase_schedule,
    preprocessing,
    training_loss,
)
from training.state import (
    METRICS_FILE,
    STATE_FILE,
    Progress,
    append_metrics,
    load_state,
    rewrite_metrics,
    save_state,
)
from training.teacher import soft_targets, teacher_checkpoint

log = logging.getLogger(__name__)

BEST_FILE = "best.safetensors"
LAST_FILE = "last.safetensors"


def seed_for(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**63 - 1)


@dataclass
class TrainResult:
    out_dir: Path
    best_path: Path | None
    best_score: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]] = field(default_factory=list)


def selection_key(cfg: TrainConfig, task: Task) -> str:
    if cfg.select_metric == "auto":
        return "macro_f1" if task is Task.SINGLE_LABEL else "macro_map"
    return cfg.select_metric


def selection_score(head: dict[str, float], key: str) -> float:
    value = head.get("macro_f1" if key == "macro_f1" else "mAP_macro", float("nan"))
    return float(value) if value is not None else float("nan")


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig`; :meth:`run` trains."""

    def __init__(self, cfg: TrainConfig, *, progress: bool = True) -> None:
        self.cfg = cfg
        self.env = distributed_env()
        self.progress = progress and self.env.is_main
        configure_process(self.env, device_spec=cfg.device, threads=cfg.threads)
        self.device = resolve_device(cfg.device, self.env)
        self.out_dir = Path(cfg.out_dir)
        self.data = training_data(cfg, self.env, progress=self.progress)
        self.task: Task = self.data.archive.task
        self.labels: LabelSpace = self.data.archive.label_space()
        self.pre = preprocessing(cfg)
        train = self.data.splits["train"]
        self.net, self.model_cfg = initial_network(cfg, self.labels, self.task, self.device)
        self.model: nn.Module = distributed_model(self.net, self.env, self.device)
        self.loss = training_loss(cfg, train.targets, self.labels, self.task, self.device)
        teacher = teacher_checkpoint(cfg, self.labels, self.task, self.device)
        self.teacher_out: ModelOutput | None = None  # (N_train, ·), computed once
        if teacher is not None:
            self.teacher_out = soft_targets(
                teacher, train.samples, cfg, self.device, env=self.env, progress=self.progress
            )
            del teacher  # its weights are no longer needed
        self.schedule = phase_schedule(cfg)
        self.optimizer = optimizer(self.net, cfg)
        self.sampler = batch_sampler(cfg, train.targets, self.task, self.env)
        self.augment = cfg.augment
        self.train_targets = torch.from_numpy(train.targets)
        self.select = selection_key(cfg, self.task)
        if cfg.val_gallery == "val" and self.select != "macro_f1":
            log.warning(
                "val_gallery: val is ignored: selecting on %s needs the training split as "
                "the gallery",
                self.select,
            )

    # ------------------------------------------------------------------ files

    def export(self, path: Path, summary: dict[str, Any]) -> Path:
        """Write a serving checkpoint (ViT, EfficientNet-Lite0) or plain weights (the CNN
        baseline)."""
        if isinstance(self.net, NETWORK_TYPES):
            meta = CheckpointMeta(
                model=self.model_cfg,
                labels=self.labels,
                preprocessing=self.pre,
                training=summary,
            )
            save_checkpoint(path, self.net, meta)
            return path
        weights = path.with_suffix(".pt")
        with atomic_path(weights) as temp:
            torch.save(self.net.state_dict(), temp)
        return weights

    # ------------------------------------------------------------------ epochs

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.cfg
        self.model.train()
        torch.manual_seed(seed_for(cfg.seed, epoch, self.env.rank))
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed_for(cfg.seed + 1, epoch, self.env.rank))
        self.sampler.set_epoch(epoch)
        weights = self.schedule.weights(epoch)
        steps = len(self.sampler)
        sums: dict[str, float] = {}
        seen, started, skipped = 0, time.perf_counter(), 0
        phase = self.schedule.phase_index(epoch)
        bar = tqdm(
            self.sampler,
            total=steps,
            disable=not self.progress,
            unit="batch",
            desc=f"epoch {epoch + 1}/{self.schedule.total_epochs} (phase {phase + 1})",
        )
        lr = self.schedule.lr(epoch)
        for step, batch_idx in enumerate(bar):
            lr = self.schedule.lr(epoch + step / steps)
            set_lr(self.optimizer, lr)
            idx = np.asarray(batch_idx)
            rows = self.data.splits["train"].rows[idx]
            x = self.data.cache.batch(rows).to(self.device, non_blocking=True)
            y = self.train_targets[idx].to(self.device)
            x = normalise(augment_batch(x, self.augment, generator), self.pre)
            with autocast(self.device, cfg.bf16):
                out: ModelOutput = self.model(x)
                teacher_logits = teacher_embeddings = None
                if self.teacher_out is not None:
                    teacher_logits = self.teacher_out.logits[idx].to(self.device)
                    teacher_embeddings = self.teacher_out.embedding[idx].to(self.device)
            parts = self.loss(
                ModelOutput(out.embedding.float(), out.logits.float()),
                y,
                weights,
                teacher_logits,
                teacher_embeddings,
            )
            if not finite_on_every_rank(self.env, parts.total):
                skipped += 1
                if skipped > max(3, steps // 10):
                    raise TrainingError(f"epoch {epoch + 1}: the loss keeps being non-finite")
                log.warning("epoch %d step %d: non-finite loss, step skipped", epoch + 1, step)
                self.optimizer.zero_grad(set_to_none=True)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            self.optimizer.step()
            seen += len(idx)
            sums["total"] = sums.get("total", 0.0) + parts.total.item()
            for name, value in parts.parts.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            rate = seen * self.env.world_size / (time.perf_counter() - started)
            bar.set_postfix(
                {k: f"{v / (step + 1):.3f}" for k, v in sums.items()} | {"img/s": f"{rate:.0f}"}
            )
        elapsed = time.perf_counter() - started
        done = max(1, steps - skipped)
        return {
            "epoch": epoch + 1,
            "phase": phase + 1,
            "lr": lr,
            "weights": dataclasses.asdict(weights),
            "loss": {k: v / done for k, v in sums.items()},
            "images_per_s": seen * self.env.world_size / elapsed if elapsed else 0.0,
            "skipped_steps": skipped,
        }

    @property
    def val_gallery(self) -> str:
        """The split validation queries search: ``val_gallery: val`` applies only when the
        selection is macro F1; leave-one-out keeps other images of a query's lesion or
        patient in the gallery, so a retrieval score selected on would be optimistic."""
        return self.cfg.val_gallery if self.select == "macro_f1" else "train"

    def validate(self) -> tuple[dict[str, float], dict[str, Any]]:
        report, _ = evaluate_split(
            self.net,
            self.data,
            "val",
            self.val_gallery,
            self.task,
            self.pre,
            self.device,
            batch_size=self.cfg.eval_batch_size,
            bf16=self.cfg.bf16,
        )
        return headline(report), report

    def run(self, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train to the end (or ``stop_after`` more epochs); returns where the best model is."""
        if self.env.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        progress = Progress(next_epoch=0, best={"score": -math.inf, "epoch": -1}, history=[])
        if resume:
            progress = load_state(
                self.out_dir,
                self.cfg,
                self.device,
                net=self.net,
                optimizer=self.optimizer,
                sampler=self.sampler,
            )
            if self.env.is_main:  # drop lines of an epoch that was cut short
                rewrite_metrics(self.out_dir, progress.history)
                self._log_resumption(progress.next_epoch)
        elif rank0_flag(self.env, self.device, (self.out_dir / STATE_FILE).exists()):
            raise TrainingError(
                f"{self.out_dir} already holds a run: pass --resume to continue it, or choose "
                "another --out"
            )
        start, best, history = progress.next_epoch, progress.best, progress.history
        writer = self._tensorboard()
        end = (
            self.schedule.total_epochs
            if stop_after is None
            else min(self.schedule.total_epochs, start + stop_after)
        )
        for epoch in range(start, end):
            record = self.train_epoch(epoch)
            barrier(self.env)
            if self.env.is_main:
                head, _ = self.validate()
                score = selection_score(head, self.select)
                record["val"] = head
                record["selection"] = {"metric": self.select, "score": score}
                if math.isfinite(score) and score > best["score"]:
                    best = {"score": score, "epoch": epoch + 1}
                    self.export(self.out_dir / BEST_FILE, self._summary(epoch + 1, head))
                record["best"] = best
                history.append(record)
                progress = Progress(epoch + 1, best, history)
                save_state(  # first: the state is the truth a resumed run starts from
                    self.out_dir,
                    self.cfg,
                    progress,
                    net=self.net,
                    optimizer=self.optimizer,
                    sampler=self.sampler,
                )
                append_metrics(self.out_dir, record)
                if writer is not None:
                    self._log_scalars(writer, record)
                log.info(
                    "epoch %d: loss %.4f, val %s %.4f (best %.4f at epoch %d), %.0f img/s",
                    epoch + 1,
                    record["loss"].get("total", float("nan")),
                    self.select,
                    score,
                    best["score"],
                    best["epoch"],
                    record["images_per_s"],
                )
            barrier(self.env)
        if writer is not None:
            writer.close()
        best_path: Path | None = None
        if self.env.is_main:
            last_head = history[-1]["val"] if history else {}
            self.export(self.out_dir / LAST_FILE, self._summary(end, last_head))
            candidate = self.out_dir / (
                BEST_FILE if isinstance(self.net, NETWORK_TYPES) else "best.pt"
            )
            best_path = candidate if candidate.exists() else None
        return TrainResult(
            self.out_dir, best_path, float(best["score"]), int(best["epoch"]), end, history
        )

    def _log_resumption(self, start: int) -> None:
        last = self.schedule.total_epochs - 1
        log.info(
            "resuming at epoch %d (phase %d, lr %.3g)",
            start + 1,
            self.schedule.phase_index(min(start, last)) + 1,
            self.schedule.lr(start),
        )

    def _summary(self, epoch: int, head: dict[str, float]) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "validation": head,
            "selection_metric": self.select,
            "dataset": {"root": str(self.data.archive.root), "layout": self.data.archive.layout},
            "config": self.cfg.to_dict(),
        }

    def _tensorboard(self) -> Any:
        if not (self.cfg.tensorboard and self.env.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: JSONL only
            log.warning("tensorboard is not installed; metrics go to %s only", METRICS_FILE)
            return None
        return SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))

    @staticmethod
    def _log_scalars(writer: Any, record: dict[str, Any]) -> None:
        step = record["epoch"]
        writer.add_scalar("lr", record["lr"], step)
        writer.add_scalar("images_per_s", record["images_per_s"], step)
        for name, value in record["loss"].items():
            writer.add_scalar(f"loss/{name}", value, step)
        for name, value in record.get("val", {}).items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(f"val/{name}", value, step)


def train(cfg: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    trainer = Trainer(cfg, progress=progress)
    try:
        return trainer.run(resume=resume)
    finally:
        end_process_group(trainer.env)
