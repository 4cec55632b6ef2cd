"""Answers name no server path (issue #12): a case image that can no longer be read is 410,
and a collection whose index cannot be loaded is reported by /readyz and /query, with
sentences that quote no file name and no exception text; the server log keeps both."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from indexer.store import MetadataStore
from support.archives import make_class_folders
from support.checkpoints import make_checkpoint
from support.http import assert_json_answer
from support.service import ServiceEnv, build_collection


def lesions(tmp_path: Path) -> ServiceEnv:
    """A collection of six small images, indexed under ``tmp_path``."""
    archive = make_class_folders(tmp_path / "archive" / "lesions", per_class=3)
    checkpoint = make_checkpoint(tmp_path / "model.safetensors", ("benign", "malignant"))
    env = ServiceEnv(
        tmp_path / "data", f"sqlite:///{tmp_path / 'm.db'}", checkpoint, archive, archive.parent
    )
    build_collection(env.database_url, env.data_dir, "lesions", checkpoint, archive)
    return env


def case_id_of(url: str, external_id: str) -> int:
    store = MetadataStore.open(url)
    try:
        (collection,) = store.list_collections()
        (case_id,) = store.find_case_ids(collection.id, external_ids=[external_id])
        return case_id
    finally:
        store.close()


def assert_names_no_path(text: str, tmp_path: Path) -> None:
    for leak in (str(tmp_path), "/archive", ".png", ".safetensors", "Errno", "Traceback"):
        assert leak not in text, text


@pytest.mark.parametrize("route", ["image", "thumbnail"])
def test_an_unreadable_case_image_is_410_without_a_server_path(
    tmp_path: Path, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = lesions(tmp_path)
    case_id = case_id_of(env.database_url, "benign/001.png")
    image = env.archive / "benign" / "001.png"
    image.unlink()
    image.mkdir()  # reading it now fails with an OSError that names the path
    with TestClient(create_app(env.settings())) as client:
        body = assert_json_answer(client.get(f"/cases/{case_id}/{route}"), {410})
    assert f"case {case_id}'s image cannot be read from the archive" in body["detail"]
    assert_names_no_path(body["detail"], tmp_path)
    assert str(image) in caplog.text  # the operator still learns which file


def test_an_index_that_cannot_be_loaded_is_reported_without_a_server_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env = lesions(tmp_path)
    env.checkpoint.unlink()  # loading the collection's model now fails, naming the file
    with TestClient(create_app(env.settings())) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        problem = ready.json()["problems"]["lesions"]
        assert "version 1 cannot be loaded" in problem
        assert_names_no_path(problem, tmp_path)
        body = assert_json_answer(
            client.post("/query", files={"file": ("q.png", b"any bytes")}),
            {503},
        )
        assert_names_no_path(body["detail"], tmp_path)
    assert str(env.checkpoint) in caplog.text
