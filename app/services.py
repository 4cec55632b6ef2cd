"""The long-lived objects one app instance holds, built in its lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.jobs import JobLauncher
from app.metrics import ServiceMetrics
from app.runtime import CollectionRegistry
from app.settings import Settings
from indexer.store import MetadataStore
from model.decoding import DecodeLimits


@dataclass
class Services:
    settings: Settings
    store: MetadataStore
    registry: CollectionRegistry
    launcher: JobLauncher
    metrics: ServiceMetrics
    limits: DecodeLimits
    thumbnail_dir: Path
