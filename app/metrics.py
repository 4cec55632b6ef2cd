"""Prometheus metrics of one app instance (its own registry: several apps in one process,
as in the tests, never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "medret_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "medret_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "medret_query_stage_seconds",
            "Time spent in each stage of POST /query (decode, embed, search)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "medret_embed_batch_size",
            "Queries embedded together in one model forward",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.index_size = Gauge(
            "medret_index_vectors",
            "Vectors in the active index version, by collection",
            ["collection"],
            registry=self.registry,
        )
        self.index_version = Gauge(
            "medret_index_version",
            "Active index version number, by collection",
            ["collection"],
            registry=self.registry,
        )
        self.ood_flagged = Counter(
            "medret_ood_flagged",
            "Queries flagged as out of distribution, by collection",
            ["collection"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "medret_index_reloads",
            "Index versions loaded after start-up, by collection and outcome",
            ["collection", "outcome"],
            registry=self.registry,
        )
