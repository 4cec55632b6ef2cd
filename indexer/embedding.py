"""Batch embedding of an archive: decode in worker processes, embed on the device.

Each DataLoader worker runs :func:`archives.canvas.prepare_sample` on a sample: it reads the
bytes once, hashes them (SHA-256: the case's content identity) and — unless the hash is
already indexed — decodes and letterboxes them, exactly as training and the service do.
The main process embeds each uint8 batch with :func:`model.inference.infer` (normalise,
bf16 autocast on CUDA, forward, unit embedding), while the workers prepare the next
batches. An unreadable file is reported (key and reason) and skipped; it never ends the run.
A PACS that stops answering does (:class:`SourceUnavailableError`): skipping every instance
after it would make a version that silently lacks them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from archives.canvas import prepare_sample
from archives.records import Sample
from dicomweb.errors import PacsRefusedError, PacsUnavailableError
from imaging.decode import DEFAULT_LIMITS, DecodeLimits
from imaging.preprocessing import PreprocessConfig
from model.architectures import Network
from model.inference import infer

log = logging.getLogger(__name__)


class SourceUnavailableError(RuntimeError):
    """The archive's server (a PACS) stopped answering or refused us while embedding;
    ``refused``: it refused (credentials, a redirect), so waiting will not help."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


ProgressCallback = Callable[[int, int], None]  # (samples done, samples total)


@dataclass(frozen=True)
class Prepared:
    """One sample after the worker: its canvas, or why there is none."""

    index: int
    content_hash: str
    canvas: torch.Tensor | None  # uint8 (3, H, W)
    metadata: Mapping[str, str]
    error: str = ""
    known: bool = False
    fatal: str = ""  # the source cannot be read at all (a PACS that does not answer)
    refused: bool = False  # … because it refused us (credentials), not because it is down


class ArchiveImages(Dataset[Prepared]):
    """Worker side of the pipeline (see the module docstring)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        pre: PreprocessConfig,
        known_hashes: frozenset[str] = frozenset(),
        limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        self.samples = samples
        self.pre = pre
        self.known = known_hashes
        self.limits = limits

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Prepared:
        try:
            done = prepare_sample(
                self.samples[i], self.pre.image_size, self.limits, skip=self.known
            )
        except (PacsUnavailableError, PacsRefusedError) as exc:
            refused = isinstance(exc, PacsRefusedError)
            return Prepared(i, "", None, {}, fatal=str(exc), refused=refused)
        return Prepared(
            i, done.content_hash, done.canvas, done.metadata, error=done.error, known=done.skipped
        )


def _collate(items: list[Prepared]) -> list[Prepared]:
    return items


@dataclass
class EmbedResult:
    """Embeddings of the samples that were new and readable, in sample order."""

    indices: list[int] = field(default_factory=list)  # into the samples given
    hashes: list[str] = field(default_factory=list)
    metadata: list[Mapping[str, str]] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    logits: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # per row
    known: list[tuple[int, str]] = field(default_factory=list)  # (index, hash) already indexed
    duplicates: list[tuple[int, str]] = field(default_factory=list)  # same content twice
    failed: list[tuple[str, str]] = field(default_factory=list)  # (sample key, reason)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        done = len(self.indices) + len(self.known) + len(self.duplicates) + len(self.failed)
        return done / self.seconds if self.seconds else 0.0


@torch.inference_mode()
def embed_samples(
    model: Network,
    pre: PreprocessConfig,
    samples: Sequence[Sample],
    *,
    device: torch.device,
    batch_size: int = 64,
    workers: int = 2,
    bf16: bool = True,
    known_hashes: frozenset[str] = frozenset(),
    limits: DecodeLimits = DEFAULT_LIMITS,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> EmbedResult:
    """Embed every sample whose content is not in ``known_hashes`` (see module docstring)."""
    model.eval()
    dataset = ArchiveImages(samples, pre, known_hashes, limits)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    result = EmbedResult()
    chunks: list[np.ndarray] = []
    logit_chunks: list[np.ndarray] = []
    seen: set[str] = set()
    done = 0
    started = time.perf_counter()
    bar = tqdm(total=len(samples), desc="embedding", unit="img", disable=not progress)
    for batch in loader:
        canvases, kept = [], []
        for item in batch:
            key = samples[item.index].key
            if item.fatal:
                bar.close()
                raise SourceUnavailableError(f"reading {key}: {item.fatal}", refused=item.refused)
            if item.error:
                result.failed.append((key, item.error))
            elif item.known:
                result.known.append((item.index, item.content_hash))
            elif item.content_hash in seen:
                result.duplicates.append((item.index, item.content_hash))
            else:
                seen.add(item.content_hash)
                canvases.append(item.canvas)
                kept.append(item)
        if canvases:
            out = infer(model, torch.stack(canvases), pre, device, bf16=bf16)
            chunks.append(out.embeddings.numpy())
            logit_chunks.append(out.logits.numpy())
            for item in kept:
                result.indices.append(item.index)
                result.hashes.append(item.content_hash)
                result.metadata.append(item.metadata)
        done += len(batch)
        bar.update(len(batch))
        elapsed = time.perf_counter() - started
        bar.set_postfix({"img/s": f"{done / elapsed:.0f}" if elapsed else "-"})
        if on_progress is not None:
            on_progress(done, len(samples))
    bar.close()
    result.seconds = time.perf_counter() - started
    if chunks:
        result.vectors = np.concatenate(chunks).astype(np.float32, copy=False)
        result.logits = np.concatenate(logit_chunks).astype(np.float32, copy=False)
    if result.failed:
        log.warning("%d unreadable file(s) skipped, e.g. %s", len(result.failed), result.failed[0])
    return result
