"""The label-aware ranking through real builds and a real store: a full build chooses λ on
its held-out cases, --add and --remove keep it, and a search ranks by it.

The archive's labels are what the checkpoint's own classifier says (its bias moved so
that it splits the images in two halves): a classifier that knows the archive perfectly,
over an embedding that knows little. The label ranking must then be chosen and must find
more cases of the query's diagnosis than the cosine; shuffled labels leave λ at 0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_scores_build import active_folder, builder_for

from archives.registry import read_archive
from indexer.embedding import EmbedResult, embed_samples
from indexer.search import CollectionIndex, SearchError
from indexer.store import MetadataStore
from indexer.vectors.index import stored_scores
from labels import LabelSpace
from model.checkpoint import load_checkpoint, save_checkpoint
from model.vit import probabilities
from support.archives import write_csv
from support.checkpoints import make_checkpoint
from support.images import write_image_folder

COUNT = 160  # 80 train, 80 validation (the held-out queries)
SHARPER = 50.0  # a freshly initialised head is unsure of everything (p ≈ 0.5)


def _embedded(
    checkpoint: Path, folder: Path, layout: str = "manifest"
) -> tuple[EmbedResult, list[str]]:
    """The checkpoint's embeddings and logits of every image of ``folder``, and their keys."""
    loaded = load_checkpoint(checkpoint)
    archive = read_archive(folder, layout)
    result = embed_samples(
        loaded.model, loaded.meta.preprocessing, list(archive.samples),
        device=torch.device("cpu"), workers=0, progress=False,
    )  # fmt: skip
    return result, [archive.samples[i].key for i in result.indices]


def knowing_archive(tmp: Path, *, shuffled: bool = False) -> tuple[Path, Path]:
    """(checkpoint, archive): labels from the checkpoint's own classifier (or shuffled)."""
    checkpoint = make_checkpoint(tmp / "model.safetensors", ("A", "B"))
    images = write_image_folder(tmp / "archive" / "images", COUNT, seed=5)
    found, keys = _embedded(checkpoint, images, "image_folder")
    logits = found.logits
    margin = logits[:, 0] - logits[:, 1]
    loaded = load_checkpoint(checkpoint)
    head = loaded.model.classifier.fc2
    with torch.no_grad():  # the boundary at the median (half A, half B), and sure of itself
        head.bias[0] -= float(np.median(margin)) / 2
        head.bias[1] += float(np.median(margin)) / 2
        head.weight *= SHARPER
        head.bias *= SHARPER
    save_checkpoint(checkpoint, loaded.model, loaded.meta)
    labels = np.where(margin > np.median(margin), "A", "B")
    if shuffled:
        labels = np.random.default_rng(0).permutation(labels)
    rows = [
        [f"images/{Path(key).name}", label, "train" if i % 2 else "val", f"P{i}"]
        for i, (key, label) in enumerate(zip(keys, labels, strict=True))
    ]
    write_csv(tmp / "archive" / "labels.csv", ["file", "label", "split", "group"], rows)
    return checkpoint, tmp / "archive"


def test_a_classifier_that_knows_the_archive_ranks_its_cases(
    store: MetadataStore, tmp_path: Path
) -> None:
    checkpoint, source = knowing_archive(tmp_path)
    builder_for(store, tmp_path).build("derm", checkpoint, source)
    record = stored_scores(active_folder(store))[1]
    assert record is not None
    ranking = record["label_ranking"]
    figures = {w: (p10, ap) for w, p10, ap in ranking["figures"]}
    assert ranking["weight"] > 0
    assert ranking["queries"] == COUNT // 2  # the validation half: held out
    assert figures[ranking["weight"]][0] > figures[0.0][0]

    index = CollectionIndex.load(store, "derm")
    assert index.ranking.active
    loaded = load_checkpoint(checkpoint)
    found, keys = _embedded(checkpoint, source)
    logits, vectors = found.logits, found.vectors
    p = probabilities(torch.from_numpy(logits), loaded.meta.model.task).numpy()
    label_of = dict(zip(keys, np.where(p[:, 0] > 0.5, "A", "B"), strict=True))
    by_label = index.search(
        store, vectors, checkpoint_sha256=loaded.sha256, top_k=10, probabilities=p
    )
    by_cosine = index.search(store, vectors, checkpoint_sha256=loaded.sha256, top_k=10)

    def share(hits_per_query: list) -> float:
        same = [
            hit.case.labels[0] == label_of[key]
            for key, hits in zip(keys, hits_per_query, strict=True)
            for hit in hits
        ]
        return float(np.mean(same))

    assert share(by_label) > share(by_cosine) + 0.1
    for hits in by_label:  # the score stays the cosine, the ranks count up
        assert [hit.rank for hit in hits] == list(range(1, 11))
        assert all(-1.0 - 1e-5 <= hit.score <= 1.0 + 1e-5 for hit in hits)

    extra = write_image_folder(source / "images", 4, seed=8, prefix="new")
    rows = (source / "labels.csv").read_text().splitlines()[1:]
    rows += [f"images/new_{i:03d}.png,A,train,N{i}" for i in range(4)]
    (source / "labels.csv").write_text("file,label,split,group\n" + "\n".join(rows) + "\n")
    assert extra.is_dir()
    builder = builder_for(store, tmp_path)
    builder.build("derm", checkpoint, source, mode="add")
    assert stored_scores(active_folder(store))[1]["label_ranking"] == ranking  # kept
    builder.remove("derm", external_ids=["images/new_000.png"])
    assert stored_scores(active_folder(store))[1]["label_ranking"] == ranking  # kept


def test_labels_the_classifier_does_not_know_keep_the_cosine(
    store: MetadataStore, tmp_path: Path
) -> None:
    checkpoint, source = knowing_archive(tmp_path, shuffled=True)
    builder_for(store, tmp_path).build("derm", checkpoint, source)
    record = stored_scores(active_folder(store))[1]
    assert record is not None
    assert record["label_ranking"]["weight"] == 0.0
    assert not CollectionIndex.load(store, "derm").ranking.active


def _share_same(index: CollectionIndex, store: MetadataStore, checkpoint: Path, source: Path, **kw):
    """The share of same-label cases in every case's top 10 (the label is the model's)."""
    loaded = load_checkpoint(checkpoint)
    images, keys = _embedded(checkpoint, source)
    p = probabilities(torch.from_numpy(images.logits), loaded.meta.model.task).numpy()
    label_of = dict(zip(keys, np.asarray(loaded.meta.labels.codes)[p.argmax(1)], strict=True))
    found = index.search(
        store, images.vectors, checkpoint_sha256=loaded.sha256, top_k=10,
        probabilities=p if kw.get("label") else None, filters=kw.get("filters"),
    )  # fmt: skip
    same = [
        hit.case.labels[0] == label_of[key]
        for key, hits in zip(keys, found, strict=True)
        for hit in hits
    ]
    return float(np.mean(same)), found


def test_a_reindex_with_reordered_label_codes_ranks_by_the_new_model(
    store: MetadataStore, tmp_path: Path
) -> None:
    """The collection row keeps the first checkpoint's codes; the version's label ranking
    must read the probabilities in the order of the checkpoint it was built with."""
    checkpoint, source = knowing_archive(tmp_path)
    builder_for(store, tmp_path).build("derm", checkpoint, source)
    loaded = load_checkpoint(checkpoint)
    head = loaded.model.classifier.fc2
    with torch.no_grad():  # the same model with its two logits swapped, codes (B, A)
        head.weight.copy_(head.weight.flip(0))
        head.bias.copy_(head.bias.flip(0))
    swapped = dataclasses.replace(loaded.meta, labels=LabelSpace.from_codes(("B", "A")))
    reordered = tmp_path / "reordered.safetensors"
    save_checkpoint(reordered, loaded.model, swapped)
    builder_for(store, tmp_path).build("derm", reordered, source)
    index = CollectionIndex.load(store, "derm")
    assert index.ranking.active
    assert index.ranking.codes == ("B", "A")
    by_label, _ = _share_same(index, store, reordered, source, label=True)
    by_cosine, _ = _share_same(index, store, reordered, source)
    assert by_label > by_cosine + 0.1

    sha = load_checkpoint(reordered).sha256
    vectors = _embedded(reordered, source)[0].vectors
    with pytest.raises(SearchError, match="class probabilities"):  # one row of 2 per query
        index.search(store, vectors[:2], checkpoint_sha256=sha, probabilities=np.ones((2, 3)))


def test_a_filter_holds_under_the_label_ranking(store: MetadataStore, tmp_path: Path) -> None:
    checkpoint, source = knowing_archive(tmp_path)
    builder_for(store, tmp_path).build("derm", checkpoint, source)
    index = CollectionIndex.load(store, "derm")
    assert index.ranking.active
    _, found = _share_same(index, store, checkpoint, source, label=True, filters={"label": "B"})
    assert all(hit.case.labels == ("B",) for hits in found for hit in hits)
    assert all(len(hits) == 10 for hits in found)
