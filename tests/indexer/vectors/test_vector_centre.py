"""A centred index: stored vectors and queries moved by the stored mean; scores.json on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from indexer.vectors.errors import VectorIndexError
from indexer.vectors.factory import IndexSpec
from indexer.vectors.index import VectorIndex, stored_scores
from indexer.vectors.space import centre_of, centred
from support.vectors import CHECKPOINT, DIM, case_ids, clustered_unit_vectors


def narrow_cone(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors all close to one direction, like a fine-tuned network's embeddings."""
    x = clustered_unit_vectors(n, DIM, seed=seed) * 0.2 + np.eye(DIM, dtype=np.float32)[0]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_a_centred_index_scores_the_centred_cosine(tmp_path: Path) -> None:
    vectors, ids = narrow_cone(200), case_ids(200)
    centre = centre_of(vectors)
    assert centre is not None
    assert np.linalg.norm(centre) > 0.9  # the cone
    index = VectorIndex.build(
        vectors, ids, IndexSpec("Flat", DIM), checkpoint_sha256=CHECKPOINT, centre=centre
    )
    query = narrow_cone(1, seed=5)[0]
    scores, found = index.search(query, 10)
    by_hand = unit(vectors - centre) @ unit(query - centre)
    expected = np.sort(by_hand)[::-1][:10]
    np.testing.assert_allclose(scores[0], expected, atol=1e-5)
    assert found[0, 0] == ids[int(np.argmax(by_hand))]
    raw = np.sort(vectors @ query)[::-1][:10]
    assert raw[0] - raw[9] < scores[0, 0] - scores[0, 9]  # the scores spread out

    # an added vector goes through the same map: it finds itself at 1
    extra = narrow_cone(1, seed=9)
    index.add(extra, np.array([7], dtype=np.int64))
    top_score, top_id = index.search(extra, 1)
    assert (top_id[0, 0], top_score[0, 0]) == (7, pytest.approx(1.0, abs=1e-5))

    # the centre and the calibration record survive a save and a load
    index.save(tmp_path)
    record = {"scores": [0.1, 0.5], "probabilities": [0.2, 0.9]}
    with_table = VectorIndex.build(
        vectors, ids, IndexSpec("Flat", DIM), checkpoint_sha256=CHECKPOINT,
        centre=centre, calibration=record,
    )  # fmt: skip
    with_table.save(tmp_path / "table")
    loaded = VectorIndex.load(tmp_path / "table")
    np.testing.assert_array_equal(loaded.centre, centre)
    assert loaded.calibration == record
    np.testing.assert_allclose(loaded.search(query, 10)[0], scores, atol=1e-6)
    stored_centre, stored_table = stored_scores(tmp_path / "table")
    np.testing.assert_array_equal(stored_centre, centre)
    assert stored_table == record


def test_an_uncentred_index_keeps_the_raw_cosine(tmp_path: Path) -> None:
    vectors = narrow_cone(50)
    index = VectorIndex.build(
        vectors, case_ids(50), IndexSpec("Flat", DIM), checkpoint_sha256=CHECKPOINT
    )
    assert index.centre is None
    assert index.calibration is None
    query = narrow_cone(1, seed=3)
    np.testing.assert_allclose(
        index.search(query, 1)[0][0, 0], (vectors @ query[0]).max(), atol=1e-6
    )
    index.save(tmp_path)
    assert json.loads((tmp_path / "scores.json").read_text()) == {
        "centre": None,
        "match_calibration": None,
    }
    assert VectorIndex.load(tmp_path).centre is None


def test_a_vector_on_the_centre_keeps_its_direction() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    centre = centre_of(np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32))
    assert centre is not None
    moved = centred(a, centre)
    np.testing.assert_allclose(moved[0], [1.0, 0.0])  # on the centre: unchanged
    np.testing.assert_allclose(moved[1], unit(np.array([-1.0, 1.0])), atol=1e-6)
    assert centre_of(a[:1]) is None  # one vector: nothing to centre


def test_a_tampered_scores_file_is_refused(tmp_path: Path) -> None:
    vectors = narrow_cone(50)
    VectorIndex.build(
        vectors, case_ids(50), IndexSpec("Flat", DIM), checkpoint_sha256=CHECKPOINT,
        centre=centre_of(vectors),
    ).save(tmp_path)  # fmt: skip
    path = tmp_path / "scores.json"
    scores = json.loads(path.read_text())
    scores["centre"] = [0.0] * DIM  # same JSON shape, another centre
    path.write_text(json.dumps(scores))
    with pytest.raises(VectorIndexError, match=r"scores\.json is corrupt or does not belong"):
        VectorIndex.load(tmp_path)
    with pytest.raises(VectorIndexError, match="corrupt"):
        stored_scores(tmp_path)
    path.unlink()
    with pytest.raises(VectorIndexError, match=r"scores\.json is missing"):
        VectorIndex.load(tmp_path)


def test_a_stored_centre_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    vectors = narrow_cone(50)
    VectorIndex.build(
        vectors, case_ids(50), IndexSpec("Flat", DIM), checkpoint_sha256=CHECKPOINT
    ).save(tmp_path)
    path, sidecar_path = tmp_path / "scores.json", tmp_path / "index.json"
    path.write_text(json.dumps({"centre": [1.0, 2.0], "match_calibration": None}))
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["scores_bytes"] = path.stat().st_size
    sidecar["scores_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(VectorIndexError, match=r"centre stored in .* is not usable"):
        VectorIndex.load(tmp_path)


def test_a_format_1_folder_loads_without_a_centre(tmp_path: Path) -> None:
    """A version written before scores.json: no centre, no table, raw cosines."""
    vectors = narrow_cone(50)
    VectorIndex.build(
        vectors, case_ids(50), IndexSpec("Flat", DIM), checkpoint_sha256=CHECKPOINT
    ).save(tmp_path)
    (tmp_path / "scores.json").unlink()
    sidecar_path = tmp_path / "index.json"
    sidecar = json.loads(sidecar_path.read_text())
    for key in ("scores_file", "scores_bytes", "scores_sha256"):
        del sidecar[key]
    sidecar["format_version"] = 1
    sidecar_path.write_text(json.dumps(sidecar))
    loaded = VectorIndex.load(tmp_path)
    assert (loaded.centre, loaded.calibration) == (None, None)
    assert stored_scores(tmp_path) == (None, None)
    query = narrow_cone(1, seed=3)
    np.testing.assert_allclose(
        loaded.search(query, 1)[0][0, 0], (vectors @ query[0]).max(), atol=1e-6
    )

    sidecar["format_version"] = 2  # format 2 must name its scores file
    sidecar_path.write_text(json.dumps(sidecar))
    with pytest.raises(VectorIndexError, match="lacks scores_file"):
        VectorIndex.load(tmp_path)
