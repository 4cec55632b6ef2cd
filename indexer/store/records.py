"""What the store's reads return and its writes take: frozen dataclasses and string enums.

Reads return these plain records (:class:`CollectionInfo`, :class:`CaseInfo`,
:class:`VersionInfo`, :class:`JobInfo`), never ORM objects, so callers cannot lazily touch
a closed session. Sequences in them are tuples; ``meta``, ``params`` and ``counts`` are
dicts. All times are timezone-aware UTC.

Each record is built from its table row by one function of its entity module
(:func:`indexer.store.jobs.job_info`, …) through :func:`record_from_row`, which copies
the record's fields by name: a record's fields are declared once, here.

The states are :class:`enum.StrEnum` members: each compares equal to its string value
and is stored as that string, so the rows written before the enums existed read the same.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from labels import Task

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

TASKS: Final = tuple(task.value for task in Task)  # the collections.task column
# How checkpoint and content hashes are held: SHA-256 in lowercase hex.
SHA256_HEX: Final = re.compile(r"^[0-9a-f]{64}$")


class VersionState(enum.StrEnum):
    """Where an index version is in its life (the ``index_versions.state`` column)."""

    BUILDING = "building"  # its files are being written
    READY = "ready"  # complete; at most one ready version per collection is active
    FAILED = "failed"  # the build did not finish (``message`` says why)
    PRUNED = "pruned"  # its files were deleted


class JobKind(enum.StrEnum):
    """What a background job does (the ``jobs.kind`` column)."""

    FULL = "full"  # rebuild the collection's index from the archive
    ADD = "add"  # add the archive's new images to the active version
    REMOVE = "remove"  # build a version without some cases


class JobState(enum.StrEnum):
    """Where a background job is in its life (the ``jobs.state`` column)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


JOB_KINDS: Final = tuple(kind.value for kind in JobKind)
FINISHED_JOB_STATES: Final = (JobState.SUCCEEDED, JobState.FAILED)
UNFINISHED_JOB_STATES: Final = (JobState.QUEUED, JobState.RUNNING)


@dataclasses.dataclass(frozen=True)
class CollectionInfo:
    """A collection: an archive indexed with one model checkpoint."""

    id: int
    name: str
    checkpoint_sha256: str
    checkpoint_path: str
    task: str  # "single_label" or "multi_label"
    label_codes: tuple[str, ...]
    label_names: tuple[str, ...]
    created_at: dt.datetime
    group_salt_fingerprint: str | None  # of the salt of its group key hashes; None: unknown


@dataclasses.dataclass(frozen=True)
class EnsuredCollection(CollectionInfo):
    """What :meth:`MetadataStore.ensure_collection` returns: the collection, and what it did.

    ``checkpoint_changed`` is true when an existing collection had another checkpoint
    SHA-256, task or label list, which have now been replaced (its index versions were
    built with the old checkpoint: only a full reindex makes them consistent again).
    """

    created: bool = False
    checkpoint_changed: bool = False


@dataclasses.dataclass(frozen=True)
class CaseRow:
    """A case to insert (:meth:`MetadataStore.add_cases`) or update (``update_cases``).

    ``id`` comes from :meth:`MetadataStore.reserve_ids` (it is the FAISS id).
    ``meta`` holds non-identifying attributes only (modality, body part, …), never patient
    names or ids; ``group_key_hash`` is :func:`hash_group_key` of the patient/lesion key.
    """

    id: int
    external_id: str
    source_uri: str
    content_hash: str  # SHA-256 hex of the image bytes
    labels: Sequence[str] = ()
    split: str = ""
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    group_key_hash: str | None = None
    labelled: bool = True  # False: no diagnosis; ``labels`` is then empty


@dataclasses.dataclass(frozen=True)
class CaseInfo:
    """A stored case."""

    id: int
    collection_id: int
    external_id: str
    source_uri: str
    content_hash: str
    labels: tuple[str, ...]
    split: str
    meta: dict[str, Any]
    group_key_hash: str | None
    created_at: dt.datetime
    labelled: bool = True


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One index version: a folder of index files built from one checkpoint."""

    id: int
    collection_id: int
    version: int
    path: str
    checkpoint_sha256: str
    factory: str
    vector_count: int
    state: VersionState
    is_active: bool
    params: dict[str, Any]
    message: str  # why it failed, if it did
    created_at: dt.datetime
    completed_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """A background indexing job (the admin API's ``JobOut`` shows most of these fields)."""

    id: str
    collection_id: int | None
    kind: JobKind
    state: JobState
    progress: float  # 0..1
    counts: dict[str, Any]
    errors: tuple[str, ...]
    message: str
    pid: int | None
    host: str | None
    heartbeat_at: dt.datetime | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


Record = TypeVar("Record", bound="DataclassInstance")


def record_from_row(record: type[Record], row: object, **converted: Any) -> Record:
    """A ``record`` whose fields are copied by name from the ORM ``row``'s attributes.

    ``converted`` gives the fields that need more than a copy (a list to a tuple, a JSON
    dict to a fresh dict, a string to its enum).
    """
    copied = {
        field.name: getattr(row, field.name)
        for field in dataclasses.fields(record)
        if field.name not in converted
    }
    return record(**copied, **converted)
