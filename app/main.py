"""The app factory. Nothing heavy happens at import: settings, the database, models and
indexes are opened in the lifespan handler, so ``import app.main`` is cheap and each
``create_app`` call (one per test) is independent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from app.api.routes import admin, cases, explain, ops, query, viewer
from app.errors import install_error_handlers
from app.followers import FollowerLauncher
from app.jobs import JobLauncher
from app.metrics import ServiceMetrics
from app.middleware import RequestContextMiddleware, UploadLimitMiddleware
from app.runtime import CollectionRegistry
from app.schemas import ErrorOut
from app.services import Services
from app.settings import Settings, load_settings
from indexer.store import MetadataStore
from indexer.vectors.index import set_search_threads

log = logging.getLogger(__name__)

DESCRIPTION = """\
Content-based medical image retrieval. Upload a dermoscopy photo, a chest X-ray or any
DICOM image to **POST /query**: the answer holds the model's class probabilities, the most
similar archived cases with their diagnoses and similarity scores, the label vote among
those cases, and an out-of-distribution flag. Errors are JSON with a `detail` sentence.
"""


def open_services(settings: Settings, metrics: ServiceMetrics) -> Services:
    """Open the store and build the registry and job launcher (blocking)."""
    data_dir = settings.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    set_search_threads(settings.search_threads)
    torch.set_num_threads(settings.resolved_torch_threads)
    store = MetadataStore.open(settings.resolved_database_url)
    limits = settings.decode_limits()  # one decode budget for every thread of the service
    launcher = JobLauncher(settings, store)
    return Services(
        settings=settings,
        store=store,
        registry=CollectionRegistry(settings, store, metrics, limits),
        launcher=launcher,
        followers=FollowerLauncher(launcher),
        metrics=metrics,
        limits=limits,
        thumbnail_dir=data_dir / "cache" / "thumbnails",
    )


async def follow_changes(services: Services) -> None:
    """Reap finished jobs and load newly activated index versions, until cancelled."""
    while True:
        await asyncio.sleep(services.settings.reload_interval_s)
        try:
            await asyncio.to_thread(services.launcher.poll)
            await asyncio.to_thread(services.registry.sync)
            await services.registry.close_retired()
        except Exception:
            log.exception("looking for new index versions failed; will retry")


def document_errors(app: FastAPI) -> None:
    """OpenAPI as the service answers: bad parameters are 400 (not FastAPI's default 422,
    which here means an undecodable image), and every error body is ``ErrorOut``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            error_ref = {"$ref": "#/components/schemas/ErrorOut"}
            schema.setdefault("components", {}).setdefault("schemas", {})["ErrorOut"] = (
                ErrorOut.model_json_schema()
            )
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    default = responses.get("422", {})
                    ref = str(default.get("content", {}).get("application/json", {}).get("schema"))
                    if "HTTPValidationError" in ref:
                        del responses["422"]
                        responses.setdefault(
                            "400",
                            {
                                "description": "bad parameters",
                                "content": {"application/json": {"schema": error_ref}},
                            },
                        )
            schema["components"]["schemas"].pop("HTTPValidationError", None)
            schema["components"]["schemas"].pop("ValidationError", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    metrics = ServiceMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await asyncio.to_thread(open_services, settings, metrics)
        await asyncio.to_thread(services.registry.sync)
        for name, problem in services.registry.problems.items():
            log.warning("collection %s is not served yet: %s", name, problem)
        app.state.services = services
        follower = asyncio.create_task(follow_changes(services))
        on_started: Callable[[], None] | None = getattr(app.state, "on_started", None)
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await services.registry.aclose()
            await asyncio.to_thread(services.followers.stop_all)
            services.launcher.poll()
            services.workers.shutdown(wait=True)
            await asyncio.to_thread(services.store.close)
            app.state.services = None

    app = FastAPI(
        title="medretrieval",
        description=DESCRIPTION,
        version="1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    document_errors(app)
    app.include_router(query.router)
    app.include_router(explain.router)
    app.include_router(cases.router)
    app.include_router(admin.router)
    app.include_router(ops.router)
    app.include_router(viewer.router)
    app.mount("/static", StaticFiles(directory=viewer.STATIC_DIR), name="static")
    app.add_middleware(UploadLimitMiddleware, max_bytes=settings.max_upload_bytes)
    if settings.cors_origins:  # outside the upload limit: its early 413s carry CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # outermost: sees every answer
    return app
