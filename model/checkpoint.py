"""Checkpoints: one ``.safetensors`` file holding the weights and a JSON description.

The JSON (stored in the safetensors header under the key ``medret``) holds the format
version, the :class:`~model.config.ModelConfig`, the
:class:`~imaging.preprocessing.PreprocessConfig`, the label space (class codes and
readable names) and a free-form training summary. A checkpoint is identified by the
SHA-256 of the file's bytes: indexes record it, and the service refuses to search an
index with embeddings from another checkpoint.

Loading validates everything and fails with :class:`CheckpointError` and a readable
reason: not a checkpoint, an unknown format version, a config that does not parse,
labels that disagree with the classifier, or weights that do not fit the network.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from files.atomic import atomic_path
from imaging.preprocessing import PreprocessConfig
from labels import LabelSpace, LabelSpaceError
from model.architectures import Network, build_model
from model.config import ConfigError, ModelConfig

FORMAT_NAME = "medret-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "medret"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint for this code."""


@dataclass(frozen=True)
class CheckpointMeta:
    model: ModelConfig
    labels: LabelSpace
    preprocessing: PreprocessConfig
    training: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if len(self.labels.codes) != self.model.num_classes:
            raise CheckpointError(
                f"the model has {self.model.num_classes} classes but the label space "
                f"lists {len(self.labels.codes)}"
            )
        if self.preprocessing.image_size != self.model.image_size:
            raise CheckpointError(
                f"preprocessing makes {self.preprocessing.image_size} images but the model "
                f"is laid out for {self.model.image_size}"
            )

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_NAME,
                "format_version": self.format_version,
                "model": self.model.to_dict(),
                "labels": {"codes": list(self.labels.codes), "names": list(self.labels.names)},
                "preprocessing": self.preprocessing.to_dict(),
                "training": dict(self.training),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"checkpoint description is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise CheckpointError("the file's description is not a medret checkpoint's")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format version {version!r} is not supported "
                f"(this code reads version {FORMAT_VERSION})"
            )
        try:
            labels = data["labels"]
            return cls(
                model=ModelConfig.from_dict(data["model"]),
                labels=LabelSpace(tuple(labels["codes"]), tuple(labels["names"])),
                preprocessing=PreprocessConfig.from_dict(data["preprocessing"]),
                training=data.get("training", {}),
                format_version=version,
            )
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint description lacks {exc}") from exc
        except LabelSpaceError as exc:
            raise CheckpointError(str(exc)) from exc
        except (ConfigError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"checkpoint description is invalid: {exc}") from exc


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: Network  # in eval mode
    meta: CheckpointMeta
    sha256: str
    path: Path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes: a checkpoint's identity."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], model: Network, meta: CheckpointMeta) -> str:
    """Write weights + description atomically (:mod:`files.atomic`); returns the hash."""
    if model.cfg != meta.model:
        raise CheckpointError("the model's config differs from the one being saved with it")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata={METADATA_KEY: meta.to_json()})
    return file_sha256(path)


def _split_safetensors(data: bytes, path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file held in memory (the header is JSON)."""
    if len(data) < 8:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: too short")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise CheckpointError(f"{path} is not a safetensors checkpoint: bad header length")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {exc}") from exc
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc


def _meta_from_bytes(data: bytes, path: str | os.PathLike[str]) -> CheckpointMeta:
    metadata = _split_safetensors(data, path)
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not a medret checkpoint")
    return CheckpointMeta.from_json(metadata[METADATA_KEY])


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """The description alone, without building the network."""
    return _meta_from_bytes(_read_bytes(path), path)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> LoadedCheckpoint:
    """Rebuild the network from the description and load its weights (strictly).

    The file is read once: the description, the weights and the SHA-256 all come from the
    same bytes, even if the file is replaced meanwhile (as training does with
    ``best.safetensors``).
    """
    data = _read_bytes(path)
    meta = _meta_from_bytes(data, path)
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is not a safetensors checkpoint: {exc}") from exc
    model = build_model(meta.model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not fit the network described in {path}: "
            f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"weight {key} has shape {tuple(tensor.shape)}, the network expects "
                f"{tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)
    model.to(map_location).eval()
    digest = hashlib.sha256(data).hexdigest()
    return LoadedCheckpoint(model=model, meta=meta, sha256=digest, path=Path(path))
