"""``medret explain``: the PNG sheet of a query's nearest cases and their maps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medret.cli import main
from medret.explain import PANEL, panel_origin, sheet_size
from support.archives import make_class_folders
from support.checkpoints import make_checkpoint
from support.service import build_collection

PER_CLASS = 3  # two classes: six cases


@dataclass(frozen=True)
class Collection:
    data_dir: Path
    url: str
    checkpoint: Path
    query: Path


def write_noise(path: Path, seed: int, size: int = 48) -> Path:
    """A PNG of random colours: textured enough that every map has a region to show."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def make_noise_classes(root: Path) -> Path:
    for class_index, name in enumerate(("benign", "malignant")):
        for i in range(PER_CLASS):
            write_noise(root / name / f"{i:03d}.png", seed=10 * class_index + i)
    return root


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    root = tmp_path_factory.mktemp("explain")
    data_dir = root / "data"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'medret.db'}"
    checkpoint = make_checkpoint(root / "model.safetensors", ("benign", "malignant"), size=64)
    archive = make_noise_classes(root / "archive")
    build_collection(url, data_dir, "derm", checkpoint, archive)
    query = write_noise(root / "query.png", seed=99, size=40)
    return Collection(data_dir, url, checkpoint, query)


def run(
    capsys: pytest.CaptureFixture[str], env: Collection, out: Path, *extra: str
) -> tuple[int, str, str]:
    given = dict(zip(extra[::2], extra[1::2], strict=True))
    arguments = {
        "--checkpoint": str(env.checkpoint),
        "--image": str(env.query),
        "--collection": "derm",
        "--data-dir": str(env.data_dir),
        "--db": env.url,
        "--out": str(out),
        **given,
    }
    code = main(["explain", *[part for pair in arguments.items() for part in pair]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_sheet_shows_the_query_and_every_case_with_their_maps(
    collection: Collection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sheet.png"
    code, stdout, stderr = run(capsys, collection, out, "--top-k", "3")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert [c["rank"] for c in summary["cases"]] == [1, 2, 3]
    scores = [c["score"] for c in summary["cases"]]
    assert scores == sorted(scores, reverse=True)
    assert summary["predicted"] in ("benign", "malignant")
    assert {c["label"] for c in summary["cases"]} <= {"benign", "malignant"}
    odds = [c["match_probability"] for c in summary["cases"]]
    assert all(p is None or 0.0 <= p <= 1.0 for p in odds), odds

    sheet = np.asarray(Image.open(out).convert("RGB"))
    assert (sheet.shape[1], sheet.shape[0]) == sheet_size(3)

    def picture(row: int, column: int) -> np.ndarray:
        x, y = panel_origin(row, column)
        return sheet[y : y + PANEL, x : x + PANEL].astype(int)

    # each map is drawn over its own picture, coloured (this model's maps all have some
    # region that raises their score); the query's row holds the
    # query and its class map, each case row the case, the case's map and the query's
    # map for that case
    query = picture(0, 0)
    overlays = [(picture(0, 1), query)]
    for row in range(1, 4):
        case = picture(row, 0)
        assert case.std() > 0
        overlays += [(picture(row, 1), case), (picture(row, 2), query)]
    changes = [float(np.abs(drawn - under).mean()) for drawn, under in overlays]
    assert all(change > 1 for change in changes), changes
    assert (sheet[-4:] == 255).all()  # nothing drawn below the last row


def test_fewer_cases_than_asked_for_give_fewer_rows(
    collection: Collection, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sheet.png"
    code, stdout, stderr = run(capsys, collection, out, "--top-k", "10")
    assert code == 0, stderr
    assert len(json.loads(stdout)["cases"]) == 2 * PER_CLASS
    assert Image.open(out).size == sheet_size(2 * PER_CLASS)


def test_a_case_gone_from_the_archive_is_a_grey_box_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"sqlite:///{data_dir / 'medret.db'}"
    checkpoint = make_checkpoint(tmp_path / "model.safetensors", ("benign", "malignant"), size=64)
    archive = make_class_folders(tmp_path / "archive", per_class=1)
    (archive / "stray.png").unlink()
    build_collection(url, data_dir, "derm", checkpoint, archive)
    (archive / "benign" / "000.png").unlink()
    env = Collection(data_dir, url, checkpoint, archive / "malignant" / "000.png")
    code, stdout, stderr = run(capsys, env, tmp_path / "sheet.png", "--top-k", "2")
    assert code == 0, stderr
    unavailable = [c for c in json.loads(stdout)["cases"] if "unavailable" in c]
    assert [c["unavailable"] for c in unavailable] == ["no longer in the archive"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--checkpoint": "missing.safetensors"}, "no checkpoint at"),
        ({"--collection": "nope"}, "collection 'nope' does not exist"),
        ({"--image": "notes.png"}, "cannot be read as an image"),
        ({"--image": "absent.png"}, "no such file"),
        ({"--checkpoint": "other.safetensors"}, "is indexed with"),
        ({"--top-k": "11"}, "at most 10"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    collection: Collection,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    (tmp_path / "notes.png").write_text("these are not pixels")
    make_checkpoint(tmp_path / "other.safetensors", ("benign", "malignant"), size=32, seed=1)
    files = {"--checkpoint", "--image"}
    extra = [
        part
        for key, value in change.items()
        for part in (key, str(tmp_path / value) if key in files else value)
    ]
    out = tmp_path / "sheet.png"
    code, stdout, stderr = run(capsys, collection, out, *extra)
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("medret explain: ")
    assert message in lines[0]
    assert not out.exists()


def test_help_explains_the_sheet(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--checkpoint", "--image", "--collection", "--top-k", "--out", "--data-dir"):
        assert option in text
    assert "sheet" in text
