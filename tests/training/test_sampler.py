from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from labels import Task
from training.sampler import (
    ClassBalancedBatchSampler,
    ShuffledBatchSampler,
    class_lists_from_targets,
)

# 5 classes, very unequal: 40, 20, 10, 6 and 2 samples (class 4 is rarer than K = 3)
SIZES = (40, 20, 10, 6, 2)
LABELS = np.concatenate([np.full(n, c) for c, n in enumerate(SIZES)])
CLASS_LISTS = class_lists_from_targets(LABELS, Task.SINGLE_LABEL)  # 78 samples


def epoch(sampler: ClassBalancedBatchSampler | ShuffledBatchSampler, e: int) -> list[list[int]]:
    sampler.set_epoch(e)
    return list(sampler)


def test_every_batch_has_p_classes_times_k_samples() -> None:
    sampler = ClassBalancedBatchSampler(CLASS_LISTS, batch_size=12, samples_per_class=3)
    batches = epoch(sampler, 0)
    assert len(batches) == len(sampler) == 78 // 12
    for batch in batches:
        assert len(batch) == 12
        per_class = Counter(int(LABELS[i]) for i in batch)
        assert len(per_class) == 4  # P = 12 // 3
        assert set(per_class.values()) == {3}
        for c in per_class:  # the K samples of a class are contiguous
            positions = [k for k, i in enumerate(batch) if LABELS[i] == c]
            assert positions == list(range(positions[0], positions[0] + 3))


def test_rare_classes_appear_and_small_classes_are_sampled_with_replacement() -> None:
    sampler = ClassBalancedBatchSampler(
        CLASS_LISTS, batch_size=12, samples_per_class=3, batches_per_epoch=60
    )
    batches = epoch(sampler, 0)
    slots = Counter(int(LABELS[i]) for b in batches for i in b)
    assert set(slots) == set(range(5))
    # uniform over classes: each class has P/n = 4/5 chance per batch → ≈ 48 batches · 3 samples
    assert all(100 <= slots[c] <= 190 for c in range(5)), slots
    rare = [i for b in batches for i in b if LABELS[i] == 4]
    assert set(rare) == {76, 77}  # both members; 3 slots from 2 samples means repeats
    # a class with enough samples never repeats one inside a batch
    for b in batches:
        assert len(set(b)) >= len(b) - 1  # only class 4 may repeat (once: 3 slots, 2 samples)


def test_samples_of_a_large_class_are_cycled_through_before_any_repeats() -> None:
    sampler = ClassBalancedBatchSampler(
        CLASS_LISTS, batch_size=12, samples_per_class=3, batches_per_epoch=40
    )
    class0 = [i for b in epoch(sampler, 0) for i in b if LABELS[i] == 0]
    assert len(class0) >= 39
    first = class0[:39]  # the queue holds 40; 13 draws of 3 take 39 without repeats
    assert len(set(first)) == 39


def test_batches_are_deterministic_per_seed_and_epoch_and_differ_between_epochs() -> None:
    a = ClassBalancedBatchSampler(CLASS_LISTS, 12, 3, seed=7)
    b = ClassBalancedBatchSampler(CLASS_LISTS, 12, 3, seed=7)
    assert epoch(a, 3) == epoch(b, 3)
    assert epoch(a, 3) == epoch(a, 3)  # iterating again repeats the epoch
    assert epoch(a, 3) != epoch(a, 4)
    c = ClassBalancedBatchSampler(CLASS_LISTS, 12, 3, seed=8)
    assert epoch(a, 3) != epoch(c, 3)


@pytest.mark.parametrize("sampler_cls", [ClassBalancedBatchSampler, ShuffledBatchSampler])
def test_rank_shards_are_disjoint_equally_long_and_cover_the_epoch(
    sampler_cls: type[ClassBalancedBatchSampler] | type[ShuffledBatchSampler],
) -> None:
    world = 3
    full = epoch(sampler_cls(CLASS_LISTS, 6, 3, seed=1, batches_per_epoch=12), 2)
    shards = [
        epoch(sampler_cls(CLASS_LISTS, 6, 3, seed=1, rank=r, world_size=world), 2)
        for r in range(world)
    ]
    # 78 // 6 = 13 batches in all → truncated to 12 → 4 per rank
    assert [len(s) for s in shards] == [4, 4, 4]
    for r, shard in enumerate(shards):
        assert len(sampler_cls(CLASS_LISTS, 6, 3, rank=r, world_size=world)) == 4
        assert shard == full[r::world]  # rank r takes batches r, r + W, …
    positions = [{(k * world + r) for k in range(len(s))} for r, s in enumerate(shards)]
    assert set.union(*positions) == set(range(12))


def test_state_dict_round_trip_reproduces_the_batches() -> None:
    trained = ClassBalancedBatchSampler(CLASS_LISTS, 12, 3, seed=5)
    trained.set_epoch(9)
    state = trained.state_dict()
    assert state == {"seed": 5, "epoch": 9}
    resumed = ClassBalancedBatchSampler(CLASS_LISTS, 12, 3)
    resumed.load_state_dict(state)
    assert list(resumed) == list(trained)


def test_more_classes_per_batch_than_classes_repeats_classes() -> None:
    lists = class_lists_from_targets(np.array([0] * 10 + [1] * 10), Task.SINGLE_LABEL)
    sampler = ClassBalancedBatchSampler(lists, batch_size=12, samples_per_class=2)  # P = 6
    for batch in epoch(sampler, 0):
        assert Counter(0 if i < 10 else 1 for i in batch) == {0: 6, 1: 6}
        assert len(set(batch)) == 12


def test_multi_label_sampler_uses_every_class_and_a_no_finding_pseudo_class() -> None:
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 4)) < np.array([0.4, 0.2, 0.1, 0.05])).astype(np.float32)
    targets[:20] = 0  # 20+ "No Finding" rows
    lists = class_lists_from_targets(targets, Task.MULTI_LABEL)
    assert lists[0] == []
    sampler = ClassBalancedBatchSampler(lists, batch_size=8, samples_per_class=2, seed=3)
    batches = epoch(sampler, 0)
    assert len(batches) == 60 // 8
    groups_seen: Counter[str] = Counter()
    for batch in batches:
        assert len(batch) == 8
        for g in range(0, 8, 2):  # every K-chunk shares a finding, or is all "none"
            chunk = targets[batch[g : g + 2]]
            if chunk.sum() == 0:
                groups_seen["none"] += 1
            else:
                shared = np.flatnonzero(chunk.min(axis=0) > 0)
                assert shared.size, chunk
                groups_seen.update(str(c) for c in shared)
    assert "none" in groups_seen
    assert set(groups_seen) == {"0", "1", "2", "3", "none"}  # rare finding 3 included


def test_multi_label_sampler_avoids_drawing_one_image_twice_in_a_batch() -> None:
    # every sample has both findings, so both classes draw from the same 8 images
    lists = [[0, 1]] * 8
    sampler = ClassBalancedBatchSampler(lists, batch_size=4, samples_per_class=2)
    for batch in epoch(sampler, 0):
        assert len(set(batch)) == 4


def test_shuffled_sampler_is_a_seeded_permutation_cut_into_full_batches() -> None:
    sampler = ShuffledBatchSampler(CLASS_LISTS, batch_size=10, seed=2)
    batches = epoch(sampler, 0)
    assert len(batches) == len(sampler) == 7
    flat = [i for b in batches for i in b]
    assert all(len(b) == 10 for b in batches)
    assert len(set(flat)) == 70  # no sample twice within one pass
    assert epoch(sampler, 0) == batches
    assert epoch(sampler, 1) != batches
    longer = epoch(ShuffledBatchSampler(CLASS_LISTS, 10, seed=2, batches_per_epoch=10), 0)
    assert len(longer) == 10
    assert longer[:7] == batches


def test_invalid_configurations_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple"):
        ClassBalancedBatchSampler(CLASS_LISTS, batch_size=10, samples_per_class=4)
    with pytest.raises(ValueError, match="rank"):
        ShuffledBatchSampler(CLASS_LISTS, 6, rank=2, world_size=2)
    with pytest.raises(ValueError, match="cannot give"):
        ShuffledBatchSampler(CLASS_LISTS[:5], batch_size=8)


def test_class_lists_from_targets() -> None:
    assert class_lists_from_targets(np.array([2, 0]), Task.SINGLE_LABEL) == [[2], [0]]
    multi = np.array([[0, 1, 1], [0, 0, 0], [0.9, 0.1, 0.0]])
    assert class_lists_from_targets(multi, Task.MULTI_LABEL) == [[1, 2], [], [0]]
    with pytest.raises(ValueError, match="one-label"):
        class_lists_from_targets(multi, Task.SINGLE_LABEL)
