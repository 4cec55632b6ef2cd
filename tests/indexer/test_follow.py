"""``medret follow`` against a real Orthanc: new instances become indexed within seconds,
bursts make few versions, a killed follower resumes with every instance indexed exactly
once, corrupt instances are skipped and reported, and a PACS that stops answering for a
while is caught up with once it answers again. Also the QIDO-RS polling feed's window."""

from __future__ import annotations

import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dicomweb.client import DicomwebClient
from dicomweb.refs import parse_source
from indexer.builder import IndexerConfig
from indexer.feeds import QidoFeed
from indexer.follow import FollowConfig, Follower
from indexer.store import MetadataStore
from medret.cli import main
from support.checkpoints import make_checkpoint
from support.group_salt import SALT_ENVIRONMENT, TEST_GROUP_SALT
from support.orthanc import Orthanc
from support.pacs_instances import MARKERS, corrupt_instance, make_instances, uids_of

COLLECTION = "pacs"
CODES = ("NORMAL", "PNEUMONIA")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.safetensors", CODES)


class Follow:
    """One ``medret follow`` process on a data folder, its log in the folder."""

    def __init__(self, data: Path, pacs: Orthanc, checkpoint: Path, *extra: str) -> None:
        self.data = data
        self.log = data / "follow.log"
        self.source, self.checkpoint = pacs.source, checkpoint
        self.args = [
            sys.executable,
            "-m",
            "medret",
            "follow",
            "--collection",
            COLLECTION,
            "--source",
            pacs.source,
            "--checkpoint",
            str(checkpoint),
            "--data-dir",
            str(data),
            "--interval-s",
            "0.2",
            "--device",
            "cpu",
            *extra,
        ]
        self.env = {
            **os.environ,
            **SALT_ENVIRONMENT,
            "MEDRET_DICOMWEB_TIMEOUT_S": "1",
            "MEDRET_DICOMWEB_RETRIES": "0",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Follow:
        self.data.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=out, env=self.env)
        return self

    def run_once(self) -> int:
        """``--once`` in this process (what the command runs, without its signal handlers)."""
        self.data.mkdir(parents=True, exist_ok=True)
        store = self.store()
        try:
            config = FollowConfig(
                collection=COLLECTION, source=self.source, checkpoint=self.checkpoint, once=True
            )
            indexer = IndexerConfig(
                data_dir=self.data, group_salt=TEST_GROUP_SALT, device="cpu", progress=False
            )
            return Follower(store, indexer, config).run()
        finally:
            store.close()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=20)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def store(self) -> MetadataStore:
        return MetadataStore.open(f"sqlite:///{self.data / 'medret.db'}")

    def indexed(self) -> list[str]:
        """External ids (SOP UIDs) of the collection's cases, as stored."""
        store = self.store()
        try:
            known = {c.name: c.id for c in store.list_collections()}
            return store.external_ids(known[COLLECTION]) if COLLECTION in known else []
        finally:
            store.close()

    def versions(self) -> int:
        store = self.store()
        try:
            return len(store.list_versions(store.get_collection(COLLECTION).id))
        finally:
            store.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def follows() -> Iterator[list[Follow]]:
    started: list[Follow] = []
    yield started
    for follow in started:
        if follow.alive():
            follow.stop(signal.SIGKILL)


def wait_until(check: Callable[[], bool], timeout: float, what: str, follow: Follow) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout:
            pytest.fail(f"{what} not within {timeout} s; follower log:\n{follow.text()[-3000:]}")
        time.sleep(0.05)
    return time.perf_counter() - started


def sops(instances: list[bytes]) -> set[str]:
    return {uids_of(data)[2] for data in instances}


def test_a_follower_indexes_what_is_there_then_each_new_instance_within_seconds(
    tmp_path: Path,
    pacs: Orthanc,
    checkpoint: Path,
    follows: list[Follow],
    record_property: Callable[[str, object], None],
) -> None:
    first = make_instances(3, seed=11)
    pacs.stow(first)
    follow = Follow(tmp_path / "data", pacs, checkpoint).start()
    follows.append(follow)
    wait_until(lambda: set(follow.indexed()) == sops(first), 60, "the first listing", follow)

    delays = []
    for data in make_instances(10, seed=12):
        stowed = time.perf_counter()
        pacs.stow([data])
        sop = uids_of(data)[2]
        wait_until(lambda sop=sop: sop in follow.indexed(), 10, "a new instance", follow)
        delays.append(time.perf_counter() - stowed)
    assert len(follow.indexed()) == 13
    assert follow.stop() == 0
    text = follow.text()
    assert "batch of 1 new instances" in text
    assert not any(marker in text for marker in MARKERS)
    delays.sort()
    p95 = delays[min(len(delays) - 1, round(0.95 * len(delays)))]
    record_property("follow_delay_p50_s", round(statistics.median(delays), 3))
    record_property("follow_delay_p95_s", round(p95, 3))
    sys.stderr.write(f"follow delay STOW -> indexed: p50 {statistics.median(delays):.2f} s, ")
    sys.stderr.write(f"p95 {p95:.2f} s\n")


def test_a_burst_makes_few_versions_and_each_instance_once(
    tmp_path: Path,
    pacs: Orthanc,
    checkpoint: Path,
    follows: list[Follow],
    record_property: Callable[[str, object], None],
) -> None:
    follow = Follow(tmp_path / "data", pacs, checkpoint).start()
    follows.append(follow)
    wait_until(lambda: COLLECTION in _collections(follow), 60, "the collection", follow)
    time.sleep(0.5)  # the first (empty) listing done: the burst comes through the feed
    burst = make_instances(60, seed=21, studies=6)
    pacs.stow(burst)
    wait_until(lambda: len(follow.indexed()) >= 60, 60, "the burst", follow)
    time.sleep(0.5)
    indexed = follow.indexed()
    assert len(indexed) == len(set(indexed)) == 60
    assert set(indexed) == sops(burst)
    versions = follow.versions()
    record_property("burst_60_versions", versions)
    sys.stderr.write(f"a 60-instance burst made {versions} versions\n")
    assert versions <= 6
    assert follow.stop() == 0


def test_a_follower_killed_mid_burst_resumes_with_every_instance_once(
    tmp_path: Path, pacs: Orthanc, checkpoint: Path, follows: list[Follow]
) -> None:
    follow = Follow(tmp_path / "data", pacs, checkpoint, "--batch-max", "10").start()
    follows.append(follow)
    wait_until(lambda: COLLECTION in _collections(follow), 60, "the collection", follow)
    time.sleep(0.5)
    burst = make_instances(60, seed=31, studies=4)
    pacs.stow(burst)
    wait_until(lambda: len(follow.indexed()) >= 10, 60, "the first batch", follow)
    follow.stop(signal.SIGKILL)
    assert 10 <= len(follow.indexed()) < 60

    again = Follow(tmp_path / "data", pacs, checkpoint, "--batch-max", "10").start()
    follows.append(again)
    wait_until(lambda: len(again.indexed()) >= 60, 60, "the rest of the burst", again)
    time.sleep(1.0)  # anything indexed twice would show up now
    indexed = again.indexed()
    assert len(indexed) == len(set(indexed)) == 60
    assert set(indexed) == sops(burst)
    assert again.stop() == 0


def test_once_skips_and_reports_a_corrupt_instance_and_indexes_the_next(
    tmp_path: Path, pacs: Orthanc, checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    follow = Follow(tmp_path / "data", pacs, checkpoint)
    assert follow.run_once() == 0  # first start: lists nothing, stores the feed's position
    good = make_instances(4, seed=41)
    pacs.stow(good[:2])
    pacs.store_rest(corrupt_instance())
    pacs.stow(good[2:])

    with caplog.at_level(logging.INFO, logger="indexer"):
        assert follow.run_once() == 0
    assert set(follow.indexed()) == sops(good)
    assert "batch of 5 new instances" in caplog.text
    assert "4 added, 0 skipped, 1 failed" in caplog.text
    store = follow.store()
    try:
        jobs = store.list_jobs(store.get_collection(COLLECTION).id)
    finally:
        store.close()
    assert [len(job.errors) for job in jobs if job.errors] == [1]
    versions = follow.versions()

    assert follow.run_once() == 0  # the cursor moved past the corrupt instance
    assert follow.versions() == versions
    assert not any(marker in caplog.text for marker in MARKERS)


def test_a_paused_pacs_is_waited_for_and_caught_up_with(
    tmp_path: Path, pacs: Orthanc, checkpoint: Path, follows: list[Follow]
) -> None:
    follow = Follow(tmp_path / "data", pacs, checkpoint).start()
    follows.append(follow)
    wait_until(lambda: COLLECTION in _collections(follow), 60, "the collection", follow)
    pacs.pause()
    try:
        wait_until(lambda: "does not answer" in follow.text(), 15, "a back-off", follow)
        assert follow.alive()
    finally:
        pacs.resume()
    later = make_instances(3, seed=51)
    pacs.stow(later)
    wait_until(lambda: set(follow.indexed()) == sops(later), 40, "catching up", follow)
    assert follow.alive()
    assert follow.stop() == 0


def test_qido_polling_lists_recent_study_dates_and_everything_every_n_polls(
    pacs: Orthanc,
) -> None:
    instances = make_instances(3, seed=61)  # study dates in 2020
    pacs.stow(instances)
    source = parse_source(pacs.source)
    with DicomwebClient(source.root) as client:
        feed = QidoFeed(source, client, full_every=3)
        first = feed.read(None, 500)
        assert {ref.sop for ref in first.refs} == sops(instances)
        assert first.done
        assert len(first.cursor) == 8
        assert feed.read(first.cursor, 500).refs == ()  # 2020 is before yesterday
        assert feed.read(first.cursor, 500).refs == ()
        assert {ref.sop for ref in feed.read(first.cursor, 500).refs} == sops(instances)


def test_follow_refuses_a_source_that_is_not_dicomweb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["follow", "--collection", "c", "--source", str(tmp_path)]
    assert main([*argv, "--data-dir", str(tmp_path / "d")]) == 2
    error = capsys.readouterr().err
    assert "must be a DICOMweb server" in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def _collections(follow: Follow) -> set[str]:
    if not (follow.data / "medret.db").exists():
        return set()
    store = follow.store()
    try:
        return {c.name for c in store.list_collections()}
    finally:
        store.close()
