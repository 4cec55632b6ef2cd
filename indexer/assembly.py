"""What a build assembles once it has a plan: case rows, and the new version's vectors.

:func:`embedded_cases` turns an embedding result into the plain inputs of
:func:`indexer.plan.plan_reindex`; :func:`case_changes` and :func:`assemble_vectors` turn the
plan into what the version and the database receive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from archives.privacy import is_identifying_key
from archives.records import Sample
from indexer.embedding import EmbedResult
from indexer.plan import EmbeddedCase, ReindexPlan
from indexer.scores import Predicted
from indexer.store import CaseRow, VersionInfo, hash_group_key
from indexer.vectors.persistence import load_vectors
from model.checkpoint import LoadedCheckpoint
from model.vit import probabilities


@dataclass(frozen=True)
class CaseChanges:
    """The case rows one build writes: new ones, and refreshed ones by case id."""

    new_rows: list[CaseRow]
    updates: dict[int, CaseRow]


def embedded_cases(embedded: EmbedResult, samples: Sequence[Sample]) -> list[EmbeddedCase]:
    """The samples embedded in this build, in the order of their vectors."""
    return [
        EmbeddedCase(position, i, samples[i].key, content_hash)
        for position, (i, content_hash) in enumerate(
            zip(embedded.indices, embedded.hashes, strict=True)
        )
    ]


def case_row(
    case_id: int,
    sample: Sample,
    content_hash: str,
    decoded_meta: Mapping[str, str],
    group_salt: str,
) -> CaseRow:
    """The database row of a case: its sample's labels, split and non-identifying metadata,
    and the salted hash of its patient/lesion key (never the key itself)."""
    meta = {
        k: v
        for k, v in {**dict(sample.metadata), **dict(decoded_meta)}.items()
        if not is_identifying_key(k)
    }
    return CaseRow(
        id=case_id,
        external_id=sample.key,
        source_uri=source_uri(sample),
        content_hash=content_hash,
        labels=list(sample.labels),
        split=sample.split,
        meta=meta,
        group_key_hash=hash_group_key(sample.group, group_salt) if sample.group else None,
        labelled=sample.labelled,
    )


def source_uri(sample: Sample) -> str:
    """Where the case's pixels are, as stored: a file path, an array reference or a PACS
    instance (:func:`archives.content.indexed_sample` reads each back)."""
    if sample.path is not None:
        return str(sample.path)
    if sample.array is not None:
        return sample.array.uri
    if sample.remote is not None:
        return sample.remote.uri
    return sample.key


def case_changes(
    plan: ReindexPlan, samples: Sequence[Sample], embedded: EmbedResult, group_salt: str
) -> CaseChanges:
    """The rows of the plan's new cases and of the known ones it keeps."""

    def row(case_id: int, case: EmbeddedCase) -> CaseRow:
        metadata = embedded.metadata[case.position]
        return case_row(case_id, samples[case.sample], case.content_hash, metadata, group_salt)

    return CaseChanges(
        new_rows=[row(c.case_id, c.embedded) for c in plan.added],
        updates={c.case_id: row(c.case_id, c.embedded) for c in plan.kept},
    )


def assemble_vectors(
    plan: ReindexPlan, embedded: EmbedResult, active: VersionInfo | None, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """The new version's vectors and ids: the active version's first when the plan extends
    it, then the embedded ones of the plan, then the carried-over old ones."""
    planned = plan.vectors
    rows = [case.embedded.position for case in planned]
    vectors = embedded.vectors[rows] if rows else np.zeros((0, dim), np.float32)
    ids = np.asarray([case.case_id for case in planned], dtype=np.int64)
    if plan.extends_active and active is not None:
        base_vectors, base_ids = load_vectors(Path(active.path))
        vectors = np.concatenate([base_vectors, vectors]) if len(vectors) else base_vectors
        ids = np.concatenate([base_ids, ids])
    if plan.carried and active is not None:
        old_vectors, old_ids = load_vectors(Path(active.path))
        mask = np.isin(old_ids, np.asarray(plan.carried, dtype=np.int64))
        vectors = np.concatenate([vectors, old_vectors[mask]])
        ids = np.concatenate([ids, old_ids[mask]])
    return vectors, ids


def predicted_of(plan: ReindexPlan, embedded: EmbedResult, loaded: LoadedCheckpoint) -> Predicted:
    """The class probabilities of the cases this build embedded (for the label ranking)."""
    task = loaded.meta.model.task
    logits = torch.from_numpy(embedded.logits)
    found = probabilities(logits, task).numpy() if len(logits) else np.zeros((0, 0))
    return Predicted(
        {case.case_id: found[case.embedded.position] for case in plan.vectors},
        loaded.meta.labels.codes,
    )
