"""Indexing straight from a real PACS (Orthanc + its DICOMweb plugin) with ``medret index
--source dicomweb+http://…``: the same cases and vectors as from a folder, ``--add``,
labels from a CSV, query keys, credentials, a corrupt instance, a PACS that goes away in
the middle, and no patient attribute stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, text

from archives.pacs import read_dicomweb_archive
from dicomweb.multipart import related_body
from indexer.builder import IndexBuilder, IndexerConfig
from indexer.sources import ArchiveSourceError
from indexer.store import JobState, MetadataStore
from indexer.vectors.persistence import load_vectors
from support.archives import write_csv
from support.checkpoints import make_checkpoint
from support.group_salt import TEST_GROUP_SALT
from support.odd_pacs import listing_server, qido_entry
from support.orthanc import Orthanc, require_orthanc
from support.pacs_instances import MARKERS, corrupt_instance, make_instances, uids_of

CODES = ("a", "b")


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return make_checkpoint(tmp_path / "model.safetensors", CODES)


def open_store(tmp_path: Path) -> MetadataStore:
    return MetadataStore.open(f"sqlite:///{tmp_path / 'data' / 'medret.db'}")


def builder(store: MetadataStore, tmp_path: Path, workers: int = 0) -> IndexBuilder:
    cfg = IndexerConfig(
        data_dir=tmp_path / "data", group_salt=TEST_GROUP_SALT, workers=workers, progress=False
    )
    return IndexBuilder(store, cfg)


def vectors_by_hash(store: MetadataStore, collection: str) -> dict[str, np.ndarray]:
    coll = store.get_collection(collection)
    vectors, ids = load_vectors(Path(store.active_version(coll.id).path))
    cases = store.get_cases([int(i) for i in ids])
    return {cases[int(i)].content_hash: vector for i, vector in zip(ids, vectors, strict=True)}


def medret_env(**env: str) -> dict[str, str]:
    """This process's environment without its MEDRET_* variables, plus the test salt and ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    return {**clean, "MEDRET_GROUP_SALT": TEST_GROUP_SALT, "TQDM_DISABLE": "1", **env}


def medret_index(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medret", "index", "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=medret_env(**env),
    )


def test_a_pacs_indexes_to_the_same_cases_and_vectors_as_its_files(
    pacs: Orthanc, ckpt: Path, tmp_path: Path
) -> None:
    instances = make_instances(14, studies=3)
    pacs.stow(instances)
    folder = tmp_path / "files"
    folder.mkdir()
    for i, data in enumerate(instances):
        (folder / f"{i:02d}.dcm").write_bytes(data)
    store = open_store(tmp_path)
    from_pacs = builder(store, tmp_path, workers=2).build("pacs", ckpt, pacs.source)
    from_disk = builder(store, tmp_path).build("disk", ckpt, folder)
    assert from_pacs.added == from_disk.added == len(instances)
    assert from_pacs.failed == []
    pacs_vectors, disk_vectors = vectors_by_hash(store, "pacs"), vectors_by_hash(store, "disk")
    assert pacs_vectors.keys() == disk_vectors.keys()  # the same bytes: WADO-RS keeps them
    for content_hash, vector in pacs_vectors.items():
        np.testing.assert_array_equal(vector, disk_vectors[content_hash])
    # each case names its instance: its SOP Instance UID, and where to fetch it again
    coll = store.get_collection("pacs")
    cases = store.get_cases(store.find_case_ids(coll.id, external_ids=[uids_of(instances[0])[2]]))
    (case,) = cases.values()
    study, series, sop = uids_of(instances[0])
    assert case.source_uri == f"{pacs.source}/studies/{study}/series/{series}/instances/{sop}"
    assert not case.labelled


def test_add_indexes_exactly_the_instances_stored_since(
    pacs: Orthanc, ckpt: Path, tmp_path: Path
) -> None:
    pacs.stow(make_instances(6, seed=1))
    done = medret_index(
        tmp_path, "--collection", "cxr", "--checkpoint", str(ckpt), "--source", pacs.source
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["added"] == 6
    later = make_instances(4, seed=2)
    pacs.stow(later)
    added = medret_index(
        tmp_path, "--collection", "cxr", "--source", pacs.source, "--checkpoint", str(ckpt), "--add"
    )
    assert added.returncode == 0, added.stderr[-2000:]
    summary = json.loads(added.stdout)
    assert (summary["added"], summary["skipped_known"], summary["vector_count"]) == (4, 6, 10)
    store = open_store(tmp_path)
    coll = store.get_collection("cxr")
    assert set(store.external_ids(coll.id)) >= {uids_of(data)[2] for data in later}
    assert store.count_cases(coll.id) == 10


def test_labels_join_by_instance_or_study_and_the_rest_stay_unlabelled(
    pacs: Orthanc, ckpt: Path, tmp_path: Path
) -> None:
    instances = make_instances(6, seed=3, studies=3)
    pacs.stow(instances)
    uids = [uids_of(data) for data in instances]
    by_study = write_csv(
        tmp_path / "studies.csv",
        ["StudyInstanceUID", "label", "sex", "PatientName"],
        [[uids[0][0], "b", "F", "Someone^Else"]],
    )
    archive = read_dicomweb_archive(pacs.source, by_study)
    labelled = {s.key: s for s in archive.samples if s.labelled}
    assert set(labelled) == {sop for study, _, sop in uids if study == uids[0][0]}
    assert all(s.labels == ("b",) and s.metadata == {"sex": "F"} for s in labelled.values())
    assert archive.dropped_columns == ("PatientName",)
    by_instance = write_csv(
        tmp_path / "instances.csv",
        ["SOPInstanceUID", "label", "split"],
        [[uids[1][2], "a", "test"], ["1.2.3.999", "b", "train"]],
    )
    store = open_store(tmp_path)
    result = builder(store, tmp_path).build("cxr", ckpt, pacs.source, labels=by_instance)
    assert result.skipped_files == {"label row without an instance in the PACS": 1}
    coll = store.get_collection("cxr")
    cases = store.get_cases(store.find_case_ids(coll.id, external_ids=[u[2] for u in uids]))
    by_sop = {case.external_id: case for case in cases.values()}
    assert (by_sop[uids[1][2]].labels, by_sop[uids[1][2]].split, by_sop[uids[1][2]].labelled) == (
        ("a",),
        "test",
        True,
    )
    assert sum(case.labelled for case in by_sop.values()) == 1


def test_query_keys_in_the_source_select_instances(pacs: Orthanc, tmp_path: Path) -> None:
    pacs.stow(make_instances(3, seed=4, modality="CR") + make_instances(2, seed=5, modality="MR"))
    assert len(read_dicomweb_archive(pacs.source).samples) == 5
    assert len(read_dicomweb_archive(f"{pacs.source}?Modality=MR").samples) == 2


def test_a_corrupt_instance_is_skipped_and_reported(
    pacs: Orthanc, ckpt: Path, tmp_path: Path
) -> None:
    pacs.stow(make_instances(4, seed=6))
    bad = corrupt_instance()
    pacs.store_rest(bad)
    store = open_store(tmp_path)
    result = builder(store, tmp_path).build("cxr", ckpt, pacs.source)
    assert result.added == 4
    ((key, reason),) = result.failed
    assert key == uids_of(bad)[2]
    assert reason  # the decoder's sentence
    job = store.list_jobs(store.get_collection("cxr").id)[0]
    assert job.state == JobState.SUCCEEDED
    assert any(key in error for error in job.errors)


def test_a_pacs_that_goes_away_mid_index_fails_the_job_and_keeps_the_version(
    pacs: Orthanc, ckpt: Path, tmp_path: Path
) -> None:
    pacs.stow(make_instances(4, seed=7))
    first = medret_index(
        tmp_path, "--collection", "cxr", "--checkpoint", str(ckpt), "--source", pacs.source
    )
    assert first.returncode == 0, first.stderr[-2000:]
    pacs.stow(make_instances(200, seed=8, size=48))
    store = open_store(tmp_path)
    coll = store.get_collection("cxr")
    active = store.active_version(coll.id)
    env = {"MEDRET_DICOMWEB_RETRIES": "1", "MEDRET_DICOMWEB_TIMEOUT_S": "2"}
    command = [
        sys.executable, "-m", "medret", "index", "--data-dir", str(tmp_path / "data"),
        "--collection", "cxr", "--checkpoint", str(ckpt), "--source", pacs.source,
        "--workers", "0", "--batch-size", "4",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=medret_env(**env)
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        job = store.running_job(coll.id)
        if job is not None and (job.counts or {}).get("seen", 0) >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before the PACS could be stopped"
    pacs.kill()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("medret index:")]
    assert "stopped" in line
    assert "previous version stays active" in line
    assert store.active_version(coll.id).id == active.id
    assert store.count_cases(coll.id) == 4
    assert store.list_jobs(coll.id)[0].state == JobState.FAILED
    pacs.start()  # the same folder: the instances are still there
    again = medret_index(
        tmp_path, "--collection", "cxr", "--checkpoint", str(ckpt), "--source", pacs.source
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["vector_count"] == 204


def test_a_pacs_that_cannot_be_reached_is_one_line_not_a_traceback(
    ckpt: Path, tmp_path: Path
) -> None:
    from support.orthanc import free_port

    source = f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web"
    done = medret_index(
        tmp_path, "--collection", "cxr", "--checkpoint", str(ckpt), "--source", source,
        MEDRET_DICOMWEB_RETRIES="0",
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "cannot reach" in done.stderr
    bad = medret_index(
        tmp_path, "--collection", "cxr", "--checkpoint", str(ckpt),
        "--source", "dicomweb+http://reader:s3cret@127.0.0.1:9/dicom-web",
    )  # fmt: skip
    assert bad.returncode == 2
    assert "must not carry credentials" in bad.stderr
    assert "s3cret" not in bad.stderr


def test_credentials_come_from_the_environment(ckpt: Path, tmp_path: Path) -> None:
    require_orthanc()
    with Orthanc(tmp_path / "orthanc", credentials=("reader", "pw-4-tests")) as pacs:
        pacs.stow(make_instances(2, seed=9))
        args = ["--collection", "cxr", "--checkpoint", str(ckpt), "--source", pacs.source]
        refused = medret_index(tmp_path, *args)
        assert refused.returncode == 2
        assert "refused the request (401)" in refused.stderr
        done = medret_index(
            tmp_path,
            *args,
            MEDRET_DICOMWEB_USERNAME="reader",
            MEDRET_DICOMWEB_PASSWORD="pw-4-tests",
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "pw-4-tests" not in done.stdout + done.stderr


def test_no_patient_attribute_reaches_the_database(
    pacs: Orthanc, ckpt: Path, tmp_path: Path
) -> None:
    pacs.stow(make_instances(5, seed=10))
    store = open_store(tmp_path)
    builder(store, tmp_path).build("cxr", ckpt, pacs.source)
    store.close()
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'medret.db'}")
    dumped = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            dumped += [repr(row) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    everything = "\n".join(dumped)
    assert "dicomweb+http" in everything  # the dump holds the cases
    for marker in (*MARKERS, "MARKER"):
        assert marker not in everything


def test_build_refuses_labels_for_a_folder(ckpt: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path)
    with pytest.raises(ArchiveSourceError, match="DICOMweb source only"):
        builder(store, tmp_path).build("x", ckpt, tmp_path, labels=tmp_path / "l.csv")


def test_an_instance_the_pacs_refuses_is_skipped_not_fatal(ckpt: Path, tmp_path: Path) -> None:
    good, refused, garbled = make_instances(3, seed=11, studies=1)
    uids = [uids_of(data) for data in (good, refused, garbled)]
    entries = [qido_entry(sop, study) for study, _, sop in uids]
    body, content_type = related_body([good])
    wado = {
        uids[0][2]: (200, content_type, body),
        uids[1][2]: (406, "text/plain", b"transfer syntax not available"),
        uids[2][2]: (200, 'multipart/related; boundary="nowhere"', b"not multipart"),
    }
    with listing_server(entries, cap=100, wado=wado) as (root, _):
        store = open_store(tmp_path)
        result = builder(store, tmp_path).build("x", ckpt, f"dicomweb+{root}")
    assert result.added == 1
    assert sorted(key for key, _ in result.failed) == sorted([uids[1][2], uids[2][2]])
    reasons = dict(result.failed)
    assert "406" in reasons[uids[1][2]]
