"""Batch samplers: class-balanced P×K batches for the metric losses, plain shuffles for CE.

Both yield lists of dataset indices (use them as a ``DataLoader``'s ``batch_sampler``) and
share the same epoch mechanics:

* **Determinism.** An epoch's batches are a pure function of ``(seed, epoch)`` (a NumPy
  ``default_rng([seed, epoch])``); ``set_epoch`` must be called before each epoch, as with
  ``DistributedSampler``. ``state_dict()`` is ``{"seed", "epoch"}``; loading it into a fresh
  sampler reproduces the same batches.
* **Epoch length.** ``len(dataset) // batch_size`` batches in all (or ``batches_per_epoch``),
  counted across every rank, so one epoch of a DDP run covers about ``len(dataset)`` samples
  whatever the number of GPUs — the same convention as ``DistributedSampler``.
* **Sharding.** Every rank generates the same epoch and rank ``r`` of ``W`` takes batches
  ``r, r + W, r + 2W, …``; the total is first truncated to a multiple of ``W`` so all ranks
  yield equally many batches (DDP would hang otherwise) and no batch is seen twice.

:class:`ClassBalancedBatchSampler` (P classes × K samples):

* ``class_lists[i]`` lists the classes of sample ``i``. A multi-label sample belongs to each of
  its classes; samples with no class (``[]``, "No Finding") form one extra pseudo-class.
* Each batch draws P classes uniformly without replacement, so rare classes are as likely as
  common ones. When P exceeds the number of classes (e.g. batch 32, K 4 → P 8 on ISIC's 7
  classes), every class is taken ``P // n`` times and ``P % n`` distinct classes once more; a
  class taken m times contributes m·K samples.
* Within a class the samples are read from a shuffled queue, reshuffled when fewer than needed
  remain, so the samples of a class are cycled through evenly instead of drawn at random.
  A class with fewer samples than it must contribute gives all of them plus random repeats
  (sampling with replacement).
* A sample already in the batch (a multi-label image drawn for another of its classes) is
  skipped while enough other samples of the class remain, so batches rarely repeat an image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from labels import Task

NONE_CLASS = -1  # key of the pseudo-class of samples with no class ("No Finding")


class _EpochBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Seed/epoch bookkeeping, epoch length and rank sharding shared by both samplers."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        rank: int,
        world_size: int,
        batches_per_epoch: int | None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        total = num_samples // batch_size if batches_per_epoch is None else batches_per_epoch
        if total < world_size:
            raise ValueError(
                f"an epoch of {total} batches of {batch_size} cannot give each of "
                f"{world_size} ranks a batch ({num_samples} samples)"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.rank = rank
        self.world_size = world_size
        self.total_batches = total - total % world_size  # equal shards for every rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])

    def __len__(self) -> int:
        return self.total_batches // self.world_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for i, batch in enumerate(self._epoch_batches(rng, self.total_batches)):
            if i % self.world_size == self.rank:
                yield batch

    def _epoch_batches(self, rng: np.random.Generator, count: int) -> Iterator[list[int]]:
        """All ``count`` batches of the epoch, identical on every rank."""
        raise NotImplementedError


class ClassBalancedBatchSampler(_EpochBatchSampler):
    """P classes × K samples per batch (P = ``batch_size // samples_per_class``).

    See the module docstring for multi-label samples, the "none" pseudo-class, rare classes,
    determinism and rank sharding.
    """

    def __init__(
        self,
        class_lists: Sequence[Sequence[int]],
        batch_size: int,
        samples_per_class: int = 4,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batches_per_epoch: int | None = None,
    ) -> None:
        if samples_per_class < 1 or batch_size % samples_per_class:
            raise ValueError(
                f"batch_size {batch_size} must be a positive multiple of "
                f"samples_per_class {samples_per_class}"
            )
        super().__init__(
            len(class_lists),
            batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            batches_per_epoch=batches_per_epoch,
        )
        self.samples_per_class = samples_per_class
        self.classes_per_batch = batch_size // samples_per_class
        members: dict[int, list[int]] = {}
        for index, classes in enumerate(class_lists):
            for c in classes or (NONE_CLASS,):
                members.setdefault(int(c), []).append(index)
        if not members:
            raise ValueError("class_lists is empty")
        self.classes: list[int] = sorted(members)  # NONE_CLASS first when present
        self.members: dict[int, np.ndarray] = {
            c: np.unique(np.asarray(m, dtype=np.int64)) for c, m in members.items()
        }

    def _epoch_batches(self, rng: np.random.Generator, count: int) -> Iterator[list[int]]:
        queues = {c: _ClassQueue(self.members[c]) for c in self.classes}
        n = len(self.classes)
        rounds, extra = divmod(self.classes_per_batch, n)
        for _ in range(count):
            times = np.full(n, rounds, dtype=np.int64)  # how often each class is picked
            times[rng.choice(n, size=extra, replace=False)] += 1
            order = rng.permutation(n)  # fill the batch class by class in random order
            batch: list[int] = []
            taken: set[int] = set()
            for k in order:
                if times[k]:
                    need = int(times[k]) * self.samples_per_class
                    picked = queues[self.classes[k]].take(need, taken, rng)
                    batch.extend(picked)
                    taken.update(picked)
            yield batch


class _ClassQueue:
    """The samples of one class in shuffled order, reshuffled when they run short."""

    def __init__(self, members: np.ndarray) -> None:
        self.members = members  # (n,) int64 sample indices
        self.member_set = set(members.tolist())
        self.order: list[int] = []
        self.position = 0

    def take(self, need: int, taken: set[int], rng: np.random.Generator) -> list[int]:
        """``need`` samples, avoiding ``taken`` while enough others exist; repeats only when
        the class is smaller than ``need``."""
        n = len(self.members)
        if n < need:  # small class: all of it, then random repeats (with replacement)
            everyone = rng.permutation(self.members).tolist()
            return everyone + rng.choice(self.members, size=need - n).tolist()
        fresh = n - sum(1 for index in taken if index in self.member_set)  # not yet in batch
        avoid = taken if fresh >= need else set()
        picked: list[int] = []
        for _ in range(2):  # at most one reshuffle: a full queue always holds enough
            while self.position < len(self.order) and len(picked) < need:
                index = self.order[self.position]
                self.position += 1
                if index not in avoid and index not in picked:
                    picked.append(index)
            if len(picked) == need:
                break
            self.order = rng.permutation(self.members).tolist()
            self.position = 0
        return picked


class ShuffledBatchSampler(_EpochBatchSampler):
    """A seeded shuffle cut into full batches (drop_last), sharded like the balanced sampler.

    ``class_lists`` only gives the dataset length (the constructor matches
    :class:`ClassBalancedBatchSampler` so the two are interchangeable); ``samples_per_class`` is
    ignored. With ``batches_per_epoch`` larger than one pass, further shuffles are appended.
    """

    def __init__(
        self,
        class_lists: Sequence[Sequence[int]],
        batch_size: int,
        samples_per_class: int = 4,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batches_per_epoch: int | None = None,
    ) -> None:
        del samples_per_class  # same signature as ClassBalancedBatchSampler
        super().__init__(
            len(class_lists),
            batch_size,
            seed=seed,
            rank=rank,
            world_size=world_size,
            batches_per_epoch=batches_per_epoch,
        )

    def _epoch_batches(self, rng: np.random.Generator, count: int) -> Iterator[list[int]]:
        per_pass = self.num_samples // self.batch_size
        produced = 0
        while produced < count:
            order = rng.permutation(self.num_samples)  # (N,)
            for b in range(min(per_pass, count - produced)):
                yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()
                produced += 1


def class_lists_from_targets(targets: np.ndarray, task: Task) -> list[list[int]]:
    """Per-sample class lists for the samplers.

    One-label: class indices (N,) → ``[[c], …]``. Multi-label: multi-hot (N, C) → the indices
    of each row's findings (``> 0.5``); an all-zero row ("No Finding") → ``[]``.
    """
    array = np.asarray(targets)
    if task is Task.MULTI_LABEL:
        if array.ndim != 2:
            raise ValueError(f"multi-label targets must be (N, C), got shape {array.shape}")
        return [np.flatnonzero(row > 0.5).tolist() for row in array]
    if array.ndim != 1:
        raise ValueError(f"one-label targets must be (N,), got shape {array.shape}")
    return [[int(c)] for c in array]
