"""A version's scores: the centre a full build stores and every query uses, kept by --add
and --remove; the match probability fitted on the version's own labelled cases."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from archives.registry import read_archive
from indexer.builder import IndexBuilder, IndexerConfig
from indexer.calibration import MIN_LABELLED_CASES, RAW_COSINE, SEARCH_SCORE, MatchCalibration
from indexer.embedding import embed_samples
from indexer.search import CollectionIndex, SearchError
from indexer.store import MetadataStore
from indexer.vectors.errors import VectorIndexError
from indexer.vectors.index import stored_scores
from indexer.vectors.persistence import load_vectors
from model.checkpoint import load_checkpoint
from support.archives import write_csv
from support.checkpoints import make_checkpoint
from support.group_salt import SALT_ENVIRONMENT, TEST_GROUP_SALT
from support.images import write_image_folder


def labelled_archive(root: Path, count: int, seed: int = 1, prefix: str = "img") -> Path:
    """A labels.csv manifest of ``count`` noise images, labelled A/B, two per patient."""
    write_image_folder(root / "images", count, seed=seed, prefix=prefix)
    old = (
        (root / "labels.csv").read_text().splitlines()[1:] if (root / "labels.csv").exists() else []
    )
    rows = [line.split(",") for line in old]
    rows += [
        [f"images/{prefix}_{i:03d}.png", "AB"[(i // 3) % 2], "train", f"{prefix}-P{i // 2}"]
        for i in range(count)
    ]
    write_csv(root / "labels.csv", ["file", "label", "split", "group"], rows)
    return root


def builder_for(store: MetadataStore, tmp: Path, *, centre: bool = True) -> IndexBuilder:
    cfg = IndexerConfig(
        data_dir=tmp / "data", group_salt=TEST_GROUP_SALT, workers=0, progress=False,
        batch_size=32, centre=centre,
    )  # fmt: skip
    return IndexBuilder(store, cfg)


def embedded(checkpoint: Path, folder: Path, layout: str) -> tuple[np.ndarray, list[str]]:
    loaded = load_checkpoint(checkpoint)
    archive = read_archive(folder, layout)
    result = embed_samples(
        loaded.model, loaded.meta.preprocessing, list(archive.samples),
        device=torch.device("cpu"), workers=0, progress=False,
    )  # fmt: skip
    return result.vectors, [archive.samples[i].key for i in result.indices]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def active_folder(store: MetadataStore, name: str = "derm") -> Path:
    return Path(store.active_version(store.get_collection(name).id).path)


def test_a_query_scores_the_cosine_centred_on_the_stored_mean(
    store: MetadataStore, tmp_path: Path
) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    source = labelled_archive(tmp_path / "archive", 64)
    builder_for(store, tmp_path).build("derm", checkpoint, source)
    folder = active_folder(store)
    vectors, ids = load_vectors(folder)  # the model's own unit embeddings
    centre, table = stored_scores(folder)
    assert centre is not None
    np.testing.assert_allclose(centre, vectors.mean(axis=0), atol=1e-6)
    assert table is not None
    assert table["labelled_cases"] == 64

    index = CollectionIndex.load(store, "derm")
    queries, _ = embedded(checkpoint, write_image_folder(tmp_path / "q", 3, seed=9), "image_folder")
    sha = load_checkpoint(checkpoint).sha256
    hits = index.search(store, queries, checkpoint_sha256=sha, top_k=64)
    by_hand = unit(queries - centre) @ unit(vectors - centre).T  # (3, 64)
    # the model's own cosines (float64, as served): what the probability reads
    raw = queries.astype(np.float64) @ unit(vectors.astype(np.float64)).T
    calibration = MatchCalibration.from_record(table)
    assert calibration.reads == RAW_COSINE
    for row, expected, raw_row in zip(hits, by_hand, raw, strict=True):
        got = {hit.case_id: hit.score for hit in row}
        want = dict(zip(ids.tolist(), expected.tolist(), strict=True))
        assert got == pytest.approx(want, abs=1e-5)
        probabilities = {hit.case_id: hit.match_probability for hit in row}
        at_raw = calibration.predict(raw_row)
        expected_p = dict(zip(ids.tolist(), at_raw.tolist(), strict=True))
        assert probabilities == pytest.approx(expected_p, abs=1e-9)
        assert all(p is not None and 0.0 <= p <= 1.0 for p in probabilities.values())
    assert np.median(np.sort(raw)[:, -1] - np.sort(raw)[:, -10]) < np.median(
        np.sort(by_hand)[:, -1] - np.sort(by_hand)[:, -10]
    )  # the centred scores spread out


def test_add_and_remove_keep_the_centre_and_a_full_build_recomputes_it(
    store: MetadataStore, tmp_path: Path
) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    source = labelled_archive(tmp_path / "archive", 56)
    builder = builder_for(store, tmp_path)
    builder.build("derm", checkpoint, source)
    first_centre, _ = stored_scores(active_folder(store))

    labelled_archive(source, 12, seed=2, prefix="new")
    added = builder.build("derm", checkpoint, source, mode="add")
    assert added.added == 12
    folder = active_folder(store)
    centre, table = stored_scores(folder)
    np.testing.assert_array_equal(centre, first_centre)  # old and new vectors share it
    vectors, _ = load_vectors(folder)
    assert not np.allclose(vectors.mean(axis=0), first_centre, atol=1e-4)
    assert table is not None
    assert table["labelled_cases"] == 68  # refitted on the version's own cases

    # a new image finds itself, at 1, in the shared space
    new_vectors, keys = embedded(checkpoint, source, "manifest")
    index = CollectionIndex.load(store, "derm")
    sha = load_checkpoint(checkpoint).sha256
    position = keys.index("images/new_000.png")
    top = index.search(store, new_vectors[position : position + 1], checkpoint_sha256=sha, top_k=1)
    assert top[0][0].case.external_id == "images/new_000.png"
    assert top[0][0].score == pytest.approx(1.0, abs=1e-4)

    builder.remove("derm", external_ids=["images/new_000.png"])
    np.testing.assert_array_equal(stored_scores(active_folder(store))[0], first_centre)

    builder.build("derm", checkpoint, source)  # full: its own mean
    folder = active_folder(store)
    vectors, _ = load_vectors(folder)
    np.testing.assert_allclose(stored_scores(folder)[0], vectors.mean(axis=0), atol=1e-6)


def test_no_centre_keeps_the_raw_cosine(store: MetadataStore, tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    source = labelled_archive(tmp_path / "archive", 52)
    builder_for(store, tmp_path, centre=False).build("derm", checkpoint, source)
    folder = active_folder(store)
    centre, table = stored_scores(folder)
    assert centre is None
    assert table is not None  # the probability is fitted on the raw cosines
    vectors, _ = load_vectors(folder)
    queries, _ = embedded(checkpoint, write_image_folder(tmp_path / "q", 1, seed=8), "image_folder")
    index = CollectionIndex.load(store, "derm")
    sha = load_checkpoint(checkpoint).sha256
    assert index.raw_vectors is None  # the score is the raw cosine: nothing more to read
    hits = index.search(store, queries, checkpoint_sha256=sha, top_k=10)[0]
    assert hits[0].score == pytest.approx(float((vectors @ queries[0]).max()), abs=1e-5)
    calibration = MatchCalibration.from_record(table)
    assert calibration.reads == RAW_COSINE
    probabilities = [hit.match_probability for hit in hits]
    assert probabilities == pytest.approx(list(calibration.predict([h.score for h in hits])))
    assert probabilities == sorted(probabilities, reverse=True)  # monotone in the rank here


def rewrite_scores(folder: Path, scores: dict) -> None:
    """Replace a version's scores.json and the size and hash its sidecar holds."""
    path = folder / "scores.json"
    path.write_text(json.dumps(scores))
    sidecar = json.loads((folder / "index.json").read_text())
    sidecar["scores_bytes"] = path.stat().st_size
    sidecar["scores_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (folder / "index.json").write_text(json.dumps(sidecar))


def test_a_table_stored_before_reads_existed_reads_the_score(
    store: MetadataStore, tmp_path: Path
) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    source = labelled_archive(tmp_path / "archive", 56)
    builder_for(store, tmp_path).build("derm", checkpoint, source)
    folder = active_folder(store)
    scores = json.loads((folder / "scores.json").read_text())
    del scores["match_calibration"]["reads"]
    rewrite_scores(folder, scores)
    (folder / "vectors.npy").unlink()  # not needed to read the score
    index = CollectionIndex.load(store, "derm")
    assert index.calibration is not None
    assert index.calibration.reads == SEARCH_SCORE
    assert index.raw_vectors is None
    queries, _ = embedded(checkpoint, write_image_folder(tmp_path / "q", 2, seed=9), "image_folder")
    sha = load_checkpoint(checkpoint).sha256
    for row in index.search(store, queries, checkpoint_sha256=sha, top_k=20):
        probabilities = [hit.match_probability for hit in row]
        assert probabilities == pytest.approx(
            list(index.calibration.predict([hit.score for hit in row])), abs=1e-12
        )
        assert probabilities == sorted(probabilities, reverse=True)


def test_a_raw_reading_table_without_its_raw_vectors_is_refused(
    store: MetadataStore, tmp_path: Path
) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    source = labelled_archive(tmp_path / "archive", 52)
    builder_for(store, tmp_path).build("derm", checkpoint, source)
    folder = active_folder(store)
    vectors, ids = load_vectors(folder)
    np.save(folder / "vectors.npy", vectors[:-1])
    np.save(folder / "ids.npy", ids[:-1])
    with pytest.raises(SearchError, match=r"holds 51 vectors of .* the index 52"):
        CollectionIndex.load(store, "derm")
    (folder / "vectors.npy").unlink()
    with pytest.raises(SearchError, match="reads raw cosines, but stored vectors are missing"):
        CollectionIndex.load(store, "derm")


def test_an_unlabelled_or_tiny_collection_has_no_match_probability(
    store: MetadataStore, tmp_path: Path
) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    builder = builder_for(store, tmp_path)
    plain = write_image_folder(tmp_path / "plain", 60, seed=4)
    builder.build("plain", checkpoint, plain, layout="image_folder")
    tiny = labelled_archive(tmp_path / "tiny", MIN_LABELLED_CASES - 10)
    builder.build("tiny", checkpoint, tiny)
    queries, _ = embedded(checkpoint, write_image_folder(tmp_path / "q", 1, seed=8), "image_folder")
    sha = load_checkpoint(checkpoint).sha256
    for name in ("plain", "tiny"):
        assert stored_scores(active_folder(store, name))[1] is None
        index = CollectionIndex.load(store, name)
        assert index.calibration is None
        assert index.centre is not None  # centred all the same
        hits = index.search(store, queries, checkpoint_sha256=sha, top_k=5)[0]
        assert [hit.match_probability for hit in hits] == [None] * 5


def as_format_1(folder: Path) -> None:
    """Rewrite a version folder as one written before scores.json existed."""
    (folder / "scores.json").unlink()
    sidecar = json.loads((folder / "index.json").read_text())
    for key in ("scores_file", "scores_bytes", "scores_sha256"):
        del sidecar[key]
    (folder / "index.json").write_text(json.dumps(sidecar | {"format_version": 1}))


def test_an_old_version_without_a_centre_loads_and_add_keeps_it_uncentred(
    store: MetadataStore, tmp_path: Path
) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    source = write_image_folder(tmp_path / "archive", 8, seed=5)
    builder_for(store, tmp_path, centre=False).build(
        "derm", checkpoint, source, layout="image_folder"
    )
    as_format_1(active_folder(store))
    index = CollectionIndex.load(store, "derm")
    assert (index.centre, index.calibration) == (None, None)

    write_image_folder(source, 3, seed=6, prefix="new")
    builder_for(store, tmp_path).build(
        "derm", checkpoint, source, layout="image_folder", mode="add"
    )
    assert stored_scores(active_folder(store)) == (None, None)  # its base's: none
    vectors, _ = embedded(checkpoint, source, "image_folder")
    index = CollectionIndex.load(store, "derm")
    sha = load_checkpoint(checkpoint).sha256
    hits = index.search(store, vectors, checkpoint_sha256=sha, top_k=1)
    assert [row[0].score for row in hits] == pytest.approx([1.0] * 11, abs=1e-4)


def test_a_tampered_scores_file_is_refused(store: MetadataStore, tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    source = labelled_archive(tmp_path / "archive", 52)
    builder_for(store, tmp_path).build("derm", checkpoint, source)
    path = active_folder(store) / "scores.json"
    scores = json.loads(path.read_text())
    scores["match_calibration"]["probabilities"][-1] = 0.999  # a "better" table
    path.write_text(json.dumps(scores))
    with pytest.raises(VectorIndexError, match=r"scores\.json is corrupt or does not belong"):
        CollectionIndex.load(store, "derm")


def test_medret_index_no_centre(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "a.safetensors", ("A", "B"))
    source = write_image_folder(tmp_path / "archive", 4, seed=3)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDRET_")}
    env.update(SALT_ENVIRONMENT)
    for collection, extra in (("plain", ["--no-centre"]), ("centred", [])):
        done = subprocess.run(
            [sys.executable, "-m", "medret", "index", "--collection", collection,
             "--checkpoint", str(checkpoint), "--source", str(source), "--layout",
             "image_folder", "--data-dir", str(data), "--workers", "0", *extra],
            capture_output=True, text=True, timeout=600, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    (plain,) = (data / "indexes" / "plain").iterdir()
    (centred,) = (data / "indexes" / "centred").iterdir()
    assert stored_scores(plain)[0] is None
    assert stored_scores(centred)[0] is not None
