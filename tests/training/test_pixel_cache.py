"""The decode-once pixel cache: reuse, content keys, damage recovery, concurrent builders."""

from __future__ import annotations

import csv
import fcntl
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archives.content import load_pixels
from archives.records import Sample
from archives.registry import read_archive
from imaging.decode import decode_image
from imaging.preprocessing import fit_to_canvas
from training.data import prepare_data
from training.distributed import DistEnv
from training.errors import TrainingError
from training.pixel_cache import CACHE_FORMAT, NOT_CACHED, PixelCache

REPO = Path(__file__).resolve().parents[2]
SIZE = (24, 32)  # not square: a swapped height and width would show


def write_dataset(root: Path, count: int = 6, seed: int = 0) -> Path:
    """``root/labels.csv`` + ``root/images/img_NN.png``: small RGB and grey images of
    varied aspect ratios (so the letterbox pads and resizes both ways)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        shape: tuple[int, ...] = (18 + 5 * i, 40 - 3 * i)
        if i % 3 != 2:
            shape = (*shape, 3)
        name = f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / "images" / name)
        names.append(name)
    write_labels(root, names)
    return root


def write_labels(root: Path, names: list[str]) -> None:
    with (root / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "split"])
        writer.writerows([name, "A" if i % 2 else "B", "train"] for i, name in enumerate(names))


def add_file(root: Path, name: str, data: bytes) -> None:
    """Add an image file (any bytes) to the dataset's manifest."""
    (root / "images" / name).write_bytes(data)
    with (root / "labels.csv").open() as fh:
        names = [row[0] for row in list(csv.reader(fh))[1:]]
    write_labels(root, [*names, name])


def samples_of(root: Path) -> list[Sample]:
    return list(read_archive(root).samples)


def expected_canvas(sample: Sample) -> np.ndarray:
    """What serving computes: decode the file's bytes, then letterbox (one path)."""
    if sample.path is not None:
        pixels = decode_image(sample.path.read_bytes()).pixels
    else:
        pixels = load_pixels(sample)
    return fit_to_canvas(pixels, SIZE).numpy()


def assert_rows_hold(cache: PixelCache, samples: list[Sample], rows: np.ndarray) -> None:
    array = cache.array
    for sample, row in zip(samples, rows, strict=True):
        assert row >= 0, sample.key
        np.testing.assert_array_equal(array[row], expected_canvas(sample), err_msg=sample.key)


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data")


# --------------------------------------------------------------------------- building


def test_canvas_is_the_serving_canvas_and_a_second_build_reuses_every_row(
    dataset: Path, tmp_path: Path
) -> None:
    samples = samples_of(dataset)
    cache = PixelCache(tmp_path / "cache", SIZE)
    assert cache.directory.name == f"{SIZE[0]}x{SIZE[1]}-{CACHE_FORMAT}"
    rows, report = cache.build(samples, workers=0, progress=False)
    assert (report.total, report.decoded, report.reused, report.failed) == (6, 6, 0, [])
    assert sorted(rows.tolist()) == list(range(6))
    assert cache.array.shape == (6, 3, *SIZE)
    assert_rows_hold(cache, samples, rows)
    size_before = cache.pixels_path.stat().st_size

    again = PixelCache(tmp_path / "cache", SIZE)
    rows2, report2 = again.build(samples, workers=0, progress=False)
    assert (report2.decoded, report2.reused, report2.failed) == (0, 6, [])
    np.testing.assert_array_equal(rows2, rows)
    assert again.pixels_path.stat().st_size == size_before
    assert_rows_hold(again, samples, rows2)


def test_each_file_is_read_once_and_decoded_from_those_bytes(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = samples_of(dataset)
    opened: list[str] = []
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        if self.suffix == ".png":
            opened.append(self.name)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counting_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read again: {self}"))
    rows, report = PixelCache(tmp_path / "cache", SIZE).build(samples, workers=0, progress=False)
    assert report.decoded == 6
    assert sorted(opened) == sorted(s.key for s in samples)
    monkeypatch.undo()
    assert_rows_hold(PixelCache(tmp_path / "cache", SIZE), samples, rows)


def test_worker_processes_give_the_same_rows(dataset: Path, tmp_path: Path) -> None:
    samples = samples_of(dataset)
    cache = PixelCache(tmp_path / "cache", SIZE)
    rows, report = cache.build(samples, workers=2, progress=False)
    assert (report.decoded, report.failed) == (6, [])
    assert_rows_hold(cache, samples, rows)


def test_same_content_under_two_names_shares_one_row(dataset: Path, tmp_path: Path) -> None:
    add_file(dataset, "copy_of_00.png", (dataset / "images" / "img_00.png").read_bytes())
    samples = samples_of(dataset)
    keys = [s.key for s in samples]
    cache = PixelCache(tmp_path / "cache", SIZE)
    rows, report = cache.build(samples, workers=0, progress=False)
    assert (report.decoded, report.reused) == (6, 1)
    assert rows[keys.index("copy_of_00.png")] == rows[keys.index("img_00.png")]
    assert cache.array.shape[0] == 6
    assert_rows_hold(cache, samples, rows)


def test_a_changed_file_gets_a_new_row(dataset: Path, tmp_path: Path) -> None:
    samples = samples_of(dataset)
    cache = PixelCache(tmp_path / "cache", SIZE)
    rows, _ = cache.build(samples, workers=0, progress=False)
    old_canvas = np.array(cache.array[rows[1]])

    changed = np.full((30, 30, 3), 200, dtype=np.uint8)
    Image.fromarray(changed).save(dataset / "images" / "img_01.png")
    rows2, report = PixelCache(tmp_path / "cache", SIZE).build(samples, workers=0, progress=False)
    assert (report.decoded, report.reused) == (1, 5)
    assert rows2[1] == 6  # appended
    np.testing.assert_array_equal(np.delete(rows2, 1), np.delete(rows, 1))
    cache = PixelCache(tmp_path / "cache", SIZE)
    assert_rows_hold(cache, samples, rows2)
    np.testing.assert_array_equal(cache.array[rows[1]], old_canvas)  # never rewritten


def test_unreadable_and_corrupt_images_are_skipped_and_listed(
    dataset: Path, tmp_path: Path
) -> None:
    png = (dataset / "images" / "img_02.png").read_bytes()
    add_file(dataset, "truncated.png", png[: len(png) // 2])
    add_file(dataset, "notes.png", b"just some text, not an image")
    add_file(dataset, "vanished.png", png)
    samples = samples_of(dataset)  # the manifest still lists vanished.png…
    (dataset / "images" / "vanished.png").unlink()  # …but the file is gone when decoding
    keys = [s.key for s in samples]

    cache = PixelCache(tmp_path / "cache", SIZE)
    rows, report = cache.build(samples, workers=0, progress=False)
    bad = {"truncated.png", "notes.png", "vanished.png"}
    assert {key for key, _ in report.failed} == bad
    reasons = dict(report.failed)
    assert "cannot read" in reasons["vanished.png"]
    assert "not an image" in reasons["notes.png"]
    for key in bad:
        assert rows[keys.index(key)] == -1
    assert (report.decoded, report.reused) == (6, 0)
    good = [i for i, key in enumerate(keys) if key not in bad]
    assert_rows_hold(cache, [samples[i] for i in good], rows[good])
    assert "3 unreadable" in report.summary()


def test_a_torn_partial_row_is_cut_off(dataset: Path, tmp_path: Path) -> None:
    samples = samples_of(dataset)
    cache = PixelCache(tmp_path / "cache", SIZE)
    cache.build(samples[:3], workers=0, progress=False)
    with cache.pixels_path.open("ab") as fh:  # a build killed in the middle of a row
        fh.write(b"\x7f" * (cache.row_bytes // 3))

    again = PixelCache(tmp_path / "cache", SIZE)
    rows, report = again.build(samples, workers=0, progress=False)
    assert (report.decoded, report.reused) == (3, 3)
    assert rows[3:].tolist() == [3, 4, 5]
    assert again.pixels_path.stat().st_size == 6 * again.row_bytes
    assert_rows_hold(again, samples, rows)


@pytest.mark.parametrize("text", ["", "{trunc", "[1, 2]", '{"abc": "row"}', '{"abc": -1}'])
def test_an_empty_or_corrupt_index_is_treated_as_empty(
    dataset: Path, tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    samples = samples_of(dataset)
    cache = PixelCache(tmp_path / "cache", SIZE)
    cache.build(samples, workers=0, progress=False)
    cache.index_path.write_text(text)

    with caplog.at_level(logging.WARNING, logger="training.pixel_cache"):
        again = PixelCache(tmp_path / "cache", SIZE)
        rows, report = again.build(samples, workers=0, progress=False)
    assert "treating it as empty" in caplog.text
    assert (report.decoded, report.failed) == (6, [])  # decoded again and appended
    assert sorted(rows.tolist()) == list(range(6, 12))
    assert_rows_hold(again, samples, rows)
    assert json.loads(again.index_path.read_text()) == again.index  # a valid index again
    assert not list(again.directory.glob("*.tmp"))


def test_index_entries_past_the_end_of_the_pixels_are_dropped(
    dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    samples = samples_of(dataset)
    cache = PixelCache(tmp_path / "cache", SIZE)
    cache.build(samples, workers=0, progress=False)
    cache.pixels_path.write_bytes(b"")  # the pixels were deleted by hand, the index kept

    with caplog.at_level(logging.WARNING, logger="training.pixel_cache"):
        rows, report = PixelCache(tmp_path / "cache", SIZE).build(
            samples, workers=0, progress=False
        )
    assert "point past the end" in caplog.text
    assert report.decoded == 6
    assert_rows_hold(PixelCache(tmp_path / "cache", SIZE), samples, rows)


def test_array_samples_are_cached_from_their_own_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    images[4] = images[0]  # the same pixels twice
    np.savez(
        tmp_path / "tinymnist.npz",
        train_images=images,
        train_labels=(np.arange(5) % 2).reshape(-1, 1).astype(np.uint8),
    )
    samples = samples_of(tmp_path / "tinymnist.npz")
    assert all(s.array is not None for s in samples)
    cache = PixelCache(tmp_path / "cache", SIZE)
    rows, report = cache.build(samples, workers=0, progress=False)
    assert (report.decoded, report.reused, report.failed) == (4, 1, [])
    assert rows[4] == rows[0]
    assert_rows_hold(cache, samples, rows)


# --------------------------------------------------------------------------- concurrency


def test_a_builder_rereads_the_index_once_it_holds_the_lock(dataset: Path, tmp_path: Path) -> None:
    samples = samples_of(dataset)
    stale = PixelCache(tmp_path / "cache", SIZE)  # made before the other build
    assert stale.index == {}
    rows_a, _ = PixelCache(tmp_path / "cache", SIZE).build(samples, workers=0, progress=False)
    rows_b, report = stale.build(samples, workers=0, progress=False)
    assert (report.decoded, report.reused) == (0, 6)
    np.testing.assert_array_equal(rows_b, rows_a)


def test_a_builder_waits_for_the_lock(dataset: Path, tmp_path: Path) -> None:
    samples = samples_of(dataset)
    cache = PixelCache(tmp_path / "cache", SIZE)
    cache.directory.mkdir(parents=True)
    result: list[np.ndarray] = []
    with cache.lock_path.open("a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # another open file: conflicts like a process
        thread = threading.Thread(
            target=lambda: result.append(cache.build(samples, workers=0, progress=False)[0])
        )
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()
        assert not cache.pixels_path.exists() or cache.pixels_path.stat().st_size == 0
        fcntl.flock(held.fileno(), fcntl.LOCK_UN)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert_rows_hold(cache, samples, result[0])


_BUILDER = """
import json, sys, time
from pathlib import Path
from archives.registry import read_archive
from training.pixel_cache import PixelCache

data, cache_dir, out, ready, go, *keys = sys.argv[1:]
wanted = set(keys)
samples = [s for s in read_archive(data).samples if s.key in wanted]
Path(ready).touch()
deadline = time.monotonic() + 60
while not Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.005)
rows, report = PixelCache(cache_dir, ({h}, {w})).build(samples, workers=0, progress=False)
Path(out).write_text(json.dumps({{"keys": [s.key for s in samples], "rows": rows.tolist(),
                                 "failed": report.failed}}))
"""


def test_two_processes_building_the_same_cache_at_once(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", count=14, seed=5)
    keys = [s.key for s in samples_of(data)]
    shared = keys[12:]
    halves = [keys[:6] + shared, keys[6:12] + shared]
    script = _BUILDER.format(h=SIZE[0], w=SIZE[1])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    go = tmp_path / "go"
    procs, outs, readies = [], [], []
    for n, half in enumerate(halves):
        out, ready = tmp_path / f"out{n}.json", tmp_path / f"ready{n}"
        outs.append(out)
        readies.append(ready)
        cmd = [sys.executable, "-c", script, str(data), str(tmp_path / "cache")]
        cmd += [str(out), str(ready), str(go), *half]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stderr=subprocess.PIPE))
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in readies) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.stderr]
        time.sleep(0.01)
    go.touch()  # both start building at the same moment
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()

    cache = PixelCache(tmp_path / "cache", SIZE)
    by_key = {s.key: s for s in samples_of(data)}
    seen: dict[str, int] = {}
    for out in outs:
        result = json.loads(out.read_text())
        assert result["failed"] == []
        rows = np.array(result["rows"])
        assert_rows_hold(cache, [by_key[k] for k in result["keys"]], rows)
        for key, row in zip(result["keys"], result["rows"], strict=True):
            assert seen.setdefault(key, row) == row  # the shared part: one row in both
    assert sorted(seen.values()) == list(range(14))  # nothing decoded twice
    assert cache.pixels_path.stat().st_size == 14 * cache.row_bytes
    assert sorted(cache.index.values()) == list(range(14))
    assert not list(cache.directory.glob("*.tmp"))


# --------------------------------------------------------------------------- read-only lookup


def test_lookup_returns_the_built_rows_and_writes_nothing(dataset: Path, tmp_path: Path) -> None:
    samples = samples_of(dataset)
    rows, _ = PixelCache(tmp_path / "cache", SIZE).build(samples[:4], workers=0, progress=False)
    reader = PixelCache(tmp_path / "cache", SIZE)
    before = snapshot(reader.directory)
    time.sleep(0.01)

    found, report = reader.lookup(samples, workers=0)
    np.testing.assert_array_equal(found[:4], rows)
    assert found[4:].tolist() == [-1, -1]
    assert report.reused == 4
    assert report.failed == [(samples[4].key, NOT_CACHED), (samples[5].key, NOT_CACHED)]
    assert_rows_hold(reader, samples[:4], found[:4])
    assert snapshot(reader.directory) == before


def test_lookup_of_a_cache_never_built_creates_nothing(dataset: Path, tmp_path: Path) -> None:
    samples = samples_of(dataset)
    rows, report = PixelCache(tmp_path / "cache", SIZE).lookup(samples, workers=0)
    assert (rows == -1).all()
    assert len(report.failed) == 6
    assert not (tmp_path / "cache").exists()


def test_prepare_data_on_other_ranks_only_reads(dataset: Path, tmp_path: Path) -> None:
    archive = read_archive(dataset)
    cache_dir = tmp_path / "cache"
    with pytest.raises(TrainingError, match="every rank"):  # rank 0 has not built it
        prepare_data(
            archive,
            SIZE,
            cache_dir,
            splits=("train",),
            workers=0,
            env=DistEnv(rank=1),
            progress=False,
        )
    assert not cache_dir.exists()

    main = prepare_data(archive, SIZE, cache_dir, splits=("train",), workers=0, progress=False)
    before = snapshot(main.cache.directory)
    other = prepare_data(
        archive,
        SIZE,
        cache_dir,
        splits=("train",),
        workers=0,
        env=DistEnv(rank=1),
        progress=False,
    )
    np.testing.assert_array_equal(other.splits["train"].rows, main.splits["train"].rows)
    assert [s.key for s in other.splits["train"].samples] == [
        s.key for s in main.splits["train"].samples
    ]
    assert (other.report.decoded, other.report.reused) == (0, 6)
    assert snapshot(main.cache.directory) == before
