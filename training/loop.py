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

Resuming (``resume=True``) reloads state.pt: the weights, Adam's moments, the epoch, the
best score and the history; every random choice of an epoch (sampler order, augmentation,
dropout) is seeded from (seed, epoch, rank), so a resumed run repeats exactly the epochs
an uninterrupted run would have made. Only rank 0 logs and writes.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

import model.device as model_device
from model.archives import Archive, Sample, read_archive
from model.checkpoint import CheckpointMeta, LabelSpace, load_checkpoint, save_checkpoint
from model.config import ModelConfig, Task
from model.device import DeviceError, autocast
from model.preprocessing import PreprocessConfig, normalise
from model.pretrained import load_pretrained_vit
from model.vit import ModelOutput, MultiScaleViT, build_model, probabilities
from training.augment import AugmentConfig, augment_batch
from training.cnn import ResNet18Like
from training.config import TrainConfig
from training.evaluation import evaluate_embeddings, headline
from training.losses import MultiLoss, balanced_class_weights
from training.pixel_cache import CacheReport, PixelCache, iterate_rows
from training.sampler import (
    ClassBalancedBatchSampler,
    ShuffledBatchSampler,
    class_lists_from_targets,
)
from training.schedule import PhaseSchedule, make_adam, set_lr

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.safetensors"
METRICS_FILE = "metrics.jsonl"


class TrainingError(RuntimeError):
    """A run that cannot start or continue (bad data, a mismatched resume)."""


# --------------------------------------------------------------------------- environment


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def distributed_env() -> DistEnv:
    """Read what ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK); one process otherwise."""
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def resolve_device(spec: str, env: DistEnv) -> torch.device:
    """This rank's device (see :func:`model.device.resolve_device`), made current on CUDA."""
    try:
        device = model_device.resolve_device(spec, env.local_rank)
    except DeviceError as exc:
        raise TrainingError(str(exc)) from None
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


# Config keys that may change between an interrupted run and its resumption: they say where
# and how the run executes, not what it computes.
RUNTIME_KEYS = frozenset({"out_dir", "device", "tensorboard", "threads", "eval_batch_size"})
RUNTIME_DATA_KEYS = frozenset({"workers", "cache_dir", "path"})


def comparable_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a config dict that must match for ``--resume``."""
    out = {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS}
    out["data"] = {k: v for k, v in cfg.get("data", {}).items() if k not in RUNTIME_DATA_KEYS}
    return out


def seed_for(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**63 - 1)


# --------------------------------------------------------------------------- data


@dataclass
class SplitData:
    samples: list[Sample]
    rows: np.ndarray  # pixel-cache row per sample
    targets: np.ndarray  # (N,) int64 or (N, C) float32


@dataclass
class PreparedData:
    archive: Archive
    cache: PixelCache
    splits: dict[str, SplitData]
    report: CacheReport
    dropped_unlabelled: int


def prepare_data(
    archive: Archive,
    size: tuple[int, int],
    cache_dir: str | Path,
    *,
    splits: tuple[str, ...],
    workers: int,
    env: DistEnv = DistEnv(),
    progress: bool = True,
) -> PreparedData:
    """Cache the labelled samples of ``splits`` (rank 0 decodes; the others only read)."""
    wanted = [s for s in archive.samples if s.split in splits]
    labelled = [s for s in wanted if s.labelled]
    cache = PixelCache(cache_dir, size)
    if env.is_main:
        rows, report = cache.build(labelled, workers=workers, progress=progress)
    if env.distributed:
        dist.barrier()
    if not env.is_main:  # rank 0 has built the cache: hash and look rows up, never write
        cache = PixelCache(cache_dir, size)
        rows, report = cache.lookup(labelled, workers=workers)
        if labelled and not (rows >= 0).any():
            raise TrainingError(
                f"rank {env.rank}: none of the {len(labelled)} images is in the pixel cache "
                f"{cache.directory} that rank 0 built ({report.summary()}); the cache "
                "directory must be on a file system that every rank sees"
            )
    keep = rows >= 0
    kept = [s for s, k in zip(labelled, keep, strict=True) if k]
    kept_rows = rows[keep]
    out: dict[str, SplitData] = {}
    for split in splits:
        idx = [i for i, s in enumerate(kept) if s.split == split]
        samples = [kept[i] for i in idx]
        targets = archive.targets(samples) if samples else np.zeros(0, dtype=np.int64)
        out[split] = SplitData(samples, kept_rows[idx], targets)
    return PreparedData(archive, cache, out, report, len(wanted) - len(labelled))


# --------------------------------------------------------------------------- network


def build_network(cfg: TrainConfig, num_classes: int, task: Task) -> tuple[nn.Module, ModelConfig]:
    """The ViT of the config (optionally from pretrained ViT/16 weights), or the CNN."""
    m = cfg.model
    overrides: dict[str, Any] = {
        "image_size": m.image_size,
        "embed_dim": m.embed_dim,
        "multiscale": m.multiscale,
        "dropout": m.dropout,
        "task": task,
    }
    if m.depth is not None:
        overrides["depth"] = m.depth
    model_cfg = ModelConfig.from_variant(m.variant, num_classes=num_classes, **overrides)
    if m.architecture == "cnn":
        base = {"tiny": 16, "small": 32, "base": 64}.get(m.variant, 32)
        return ResNet18Like(
            num_classes, embed_dim=m.embed_dim, base_width=base, dropout=m.dropout
        ), model_cfg
    net = build_model(model_cfg)
    if m.pretrained:
        load_pretrained_vit(net, m.pretrained)
    return net, model_cfg


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.inference_mode()
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
    """(embeddings (N, E) float32, logits (N, C) float32) of cached rows, in eval mode."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    embs, logits = [], []
    for chunk in iterate_rows(rows, batch_size):
        x = normalise(cache.batch(chunk).to(device, non_blocking=True), pre)
        with autocast(device, bf16):
            out: ModelOutput = net(x)
        embs.append(out.embedding.float().cpu())
        logits.append(out.logits.float().cpu())
    net.train(was_training)
    if not embs:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    emb = torch.nn.functional.normalize(torch.cat(embs), dim=1)  # re-normalise after bf16
    return emb.numpy(), torch.cat(logits).numpy()


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
    # ``query == gallery`` (e.g. evaluating the training split against itself): each query
    # must not retrieve itself.
    """The full report of ``query`` split queries against a ``gallery`` split index."""
    labels = data.archive.label_space()
    q, g = data.splits[query], data.splits[gallery]
    q_emb, q_logits = embed_rows(
        model, data.cache, q.rows, pre, device, batch_size=batch_size, bf16=bf16
    )
    g_emb, _ = embed_rows(model, data.cache, g.rows, pre, device, batch_size=batch_size, bf16=bf16)
    probs = probabilities(torch.from_numpy(q_logits), task).numpy()
    report = evaluate_embeddings(
        query_emb=q_emb,
        query_targets=q.targets,
        query_probs=probs,
        gallery_emb=g_emb,
        gallery_targets=g.targets,
        multi_label=task is Task.MULTI_LABEL,
        codes=list(labels.codes),
        names=list(labels.names),
        exclude_self=query == gallery,
    )
    return report, {"query_emb": q_emb, "gallery_emb": g_emb, "probs": probs}


# --------------------------------------------------------------------------- the run


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
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if not self.env.is_main:  # only rank 0 logs
            logging.getLogger().setLevel(logging.WARNING)
        if self.env.distributed and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
            # rank 0 decodes the cache and validates while the others wait at barriers
            dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
        self.device = resolve_device(cfg.device, self.env)
        self.out_dir = Path(cfg.out_dir)
        if not cfg.data.path:
            raise TrainingError("no dataset given: set data.path (or --data)")
        archive = read_archive(cfg.data.path, cfg.data.layout, val_fraction=cfg.data.val_fraction)
        if self.env.is_main:
            log.info("%s", archive.summary())
        self.task = archive.task
        size = (cfg.model.image_size, cfg.model.image_size)
        self.pre = PreprocessConfig(image_size=size)
        self.data = prepare_data(
            archive,
            size,
            cfg.data.cache_dir,
            splits=("train", "val"),
            workers=cfg.data.workers,
            env=self.env,
            progress=self.progress,
        )
        train = self.data.splits["train"]
        if len(train.samples) < cfg.batch_size:
            raise TrainingError(
                f"the training split has {len(train.samples)} usable images, fewer than one "
                f"batch of {cfg.batch_size}"
            )
        if not len(self.data.splits["val"].samples):
            raise TrainingError("the validation split is empty: nothing to select on")
        self.labels: LabelSpace = archive.label_space()
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
        net, self.model_cfg = build_network(cfg, len(self.labels.codes), self.task)
        self.net = net.to(self.device)
        self.model: nn.Module = self.net
        if self.env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # a phase that weights a loss 0 leaves its head without gradients
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=ids, find_unused_parameters=True
            )
        class_weights = None
        if cfg.loss.class_weights == "balanced":
            class_weights = balanced_class_weights(train.targets, len(self.labels.codes), self.task)
        self.loss = MultiLoss(
            self.task,
            contrastive_margin=cfg.loss.contrastive_margin,
            triplet_margin=cfg.loss.triplet_margin,
            mining=cfg.loss.mining,
            class_weights=class_weights,
            temperature=cfg.loss.temperature,
        ).to(self.device)
        self.teacher: nn.Module | None = None
        if cfg.loss.teacher:
            teacher = load_checkpoint(cfg.loss.teacher, self.device)
            if teacher.meta.labels.codes != self.labels.codes:
                raise TrainingError(
                    f"the teacher {cfg.loss.teacher} predicts {list(teacher.meta.labels.codes)}, "
                    f"the dataset has {list(self.labels.codes)}"
                )
            if teacher.meta.model.task is not self.task:
                raise TrainingError(
                    f"the teacher is {teacher.meta.model.task.value}, the dataset is "
                    f"{self.task.value}"
                )
            self.teacher = teacher.model.eval()
        elif any(p.distill > 0 for p in cfg.phases):
            raise TrainingError("a phase weights distillation but no loss.teacher is given")
        self.schedule = PhaseSchedule([p.to_phase() for p in cfg.phases], base_lr=cfg.lr)
        self.optimizer = make_adam(self.net.parameters(), cfg.lr)
        lists = class_lists_from_targets(train.targets, self.task)
        sampler_cls = (
            ClassBalancedBatchSampler if cfg.sampler == "balanced" else ShuffledBatchSampler
        )
        self.sampler = sampler_cls(
            lists,
            cfg.batch_size,
            cfg.samples_per_class,
            seed=cfg.seed,
            rank=self.env.rank,
            world_size=self.env.world_size,
            batches_per_epoch=cfg.batches_per_epoch,
        )
        self.augment = AugmentConfig(
            hflip=cfg.augment.hflip,
            vflip=cfg.augment.vflip,
            max_rotation_deg=cfg.augment.max_rotation_deg,
        )
        self.train_targets = torch.from_numpy(train.targets)
        self.select = selection_key(cfg, self.task)

    # ------------------------------------------------------------------ state

    def save_state(
        self, next_epoch: int, best: dict[str, Any], history: list[dict[str, Any]]
    ) -> None:
        state = {
            "format": "medret-train-state",
            "config": self.cfg.to_dict(),
            "epoch": next_epoch,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "best": best,
            "history": history,
        }
        tmp = self.out_dir / f".{STATE_FILE}.tmp"
        torch.save(state, tmp)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(self.out_dir / STATE_FILE)

    def load_state(self) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
        path = self.out_dir / STATE_FILE
        if not path.exists():
            raise TrainingError(f"--resume: no training state at {path}")
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as exc:  # a torn or foreign file
            raise TrainingError(
                f"--resume: {path} is not a readable training state: {exc}"
            ) from exc
        if state.get("format") != "medret-train-state":
            raise TrainingError(f"--resume: {path} is not a medret training state")
        saved = comparable_config(state["config"])
        current = comparable_config(self.cfg.to_dict())
        if saved != current:
            diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise TrainingError(
                f"--resume: the configuration differs from the interrupted run's in {diff}"
            )
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        return int(state["epoch"]), dict(state["best"]), list(state["history"])

    def export(self, path: Path, summary: dict[str, Any]) -> Path:
        """Write a serving checkpoint (ViT) or plain weights (the CNN baseline)."""
        if isinstance(self.net, MultiScaleViT):
            meta = CheckpointMeta(
                model=self.model_cfg,
                labels=self.labels,
                preprocessing=self.pre,
                training=summary,
            )
            save_checkpoint(path, self.net, meta)
            return path
        weights = path.with_suffix(".pt")
        torch.save(self.net.state_dict(), weights)
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
                teacher_logits = None
                if self.teacher is not None and weights.distill > 0:
                    with torch.no_grad():
                        teacher_logits = self.teacher(x).logits
            parts = self.loss(
                ModelOutput(out.embedding.float(), out.logits.float()), y, weights, teacher_logits
            )
            if not self._all_finite(parts.total):
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

    def _on_rank0(self, flag: bool) -> bool:
        """Rank 0's value of ``flag`` on every rank, so that all ranks take the same branch."""
        if not self.env.distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank (all ranks must skip a step together)."""
        finite = torch.isfinite(loss.detach()).to(torch.int32)
        if self.env.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def validate(self) -> tuple[dict[str, float], dict[str, Any]]:
        report, _ = evaluate_split(
            self.net,
            self.data,
            "val",
            "train",
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
        start = 0
        best: dict[str, Any] = {"score": -math.inf, "epoch": -1}
        history: list[dict[str, Any]] = []
        if resume:
            start, best, history = self.load_state()
            if self.env.is_main:  # drop lines of an epoch that was cut short
                self._rewrite_metrics(history)
            if self.env.is_main:
                log.info(
                    "resuming at epoch %d (phase %d, lr %.3g)",
                    start + 1,
                    self.schedule.phase_index(min(start, self.schedule.total_epochs - 1)) + 1,
                    self.schedule.lr(start),
                )
        elif self._on_rank0((self.out_dir / STATE_FILE).exists()):
            raise TrainingError(
                f"{self.out_dir} already holds a run: pass --resume to continue it, or choose "
                "another --out"
            )
        writer = self._tensorboard()
        end = (
            self.schedule.total_epochs
            if stop_after is None
            else min(self.schedule.total_epochs, start + stop_after)
        )
        for epoch in range(start, end):
            record = self.train_epoch(epoch)
            if self.env.distributed:
                dist.barrier()
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
                self.save_state(epoch + 1, best, history)  # first: the state is the truth
                with (self.out_dir / METRICS_FILE).open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
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
            if self.env.distributed:
                dist.barrier()
        if writer is not None:
            writer.close()
        best_path: Path | None = None
        if self.env.is_main:
            last_head = history[-1]["val"] if history else {}
            self.export(self.out_dir / LAST_FILE, self._summary(end, last_head))
            candidate = self.out_dir / (
                BEST_FILE if isinstance(self.net, MultiScaleViT) else "best.pt"
            )
            best_path = candidate if candidate.exists() else None
        return TrainResult(
            self.out_dir, best_path, float(best["score"]), int(best["epoch"]), end, history
        )

    def _rewrite_metrics(self, history: list[dict[str, Any]]) -> None:
        tmp = self.out_dir / f".{METRICS_FILE}.tmp"
        tmp.write_text("".join(json.dumps(record) + "\n" for record in history))
        tmp.replace(self.out_dir / METRICS_FILE)

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
        if trainer.env.distributed and dist.is_initialized():
            dist.destroy_process_group()
