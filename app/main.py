"""The app factory: `create_app(settings)`; `uvicorn --factory app.main:create_app` reads env."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from app.auth import KeyCache, UploadGate
from app.lifespan import lifespan as sweeper_lifespan
from app.limits import BodySizeLimit
from app.observability import install_metrics
from app.problems import install_problem_handlers
from app.routes import datasets, events, health, jobs
from app.routes.docs import mount_docs
from app.routes.web import mount_web
from app.storage_http import install_storage_handler
from jobs.db import make_engine, make_sessionmaker
from jobs.queue import create_celery
from jobs.settings import Settings, get_settings

# Routes that take an upload: checked for a key, the owner's limits and size before the body.
UPLOAD_PATHS = ("/v1/jobs", "/v1/datasets")

DESCRIPTION = """
Upload a labeled image dataset (a zip of class folders, or images and a labels.csv) once,
then start jobs on it by id; or try the built-in `demo-mnist-1-2-3`. A worker generates
images for each under-represented class, fills the classes up, and compares a classifier
trained on the original, an oversampled and the balanced data.

Errors are `application/problem+json` (RFC 9457).
"""

TAGS = [
    {"name": "jobs", "description": "Balancing jobs: start, follow, fetch results, cancel."},
    {
        "name": "datasets",
        "description": "Datasets: upload once, run any number of jobs on them; built-in ones.",
    },
    {"name": "health", "description": "Liveness and readiness probes."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    app = FastAPI(
        title="GAN class balancer",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        docs_url=None,  # /docs and /redoc: app/routes/docs.py, with no CDN
        redoc_url=None,
        lifespan=sweeper_lifespan,  # re-queues jobs of dead workers (jobs/sweeper.py)
    )
    engine = make_engine(settings.database_url, pool_sqlite=True)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.key_cache = KeyCache(settings.api_key_cache_s)
    # One poller for all of this process's event streams (app/routes/events.py).
    app.state.job_watch = events.JobWatch(app.state.sessionmaker)
    app.state.celery = create_celery(settings)
    # Slack for the multipart envelope around the file and the config field.
    limit = settings.max_upload_bytes + 1024**2
    app.add_middleware(BodySizeLimit, paths=UPLOAD_PATHS, limit=limit)
    # Outermost: an upload without a valid key, or over its owner's limits, is refused unread.
    app.add_middleware(UploadGate, paths=UPLOAD_PATHS, job_paths=("/v1/jobs",))
    # Outside even that: /metrics counts and times every request, refused uploads included.
    install_metrics(app, app.state.sessionmaker)
    app.include_router(jobs.router)
    app.include_router(datasets.router)
    app.include_router(events.router)
    app.include_router(health.router)
    mount_docs(app)  # before mount_web: its /static mount would take /static/docs
    mount_web(app)
    install_problem_handlers(app)
    install_storage_handler(app)  # a store that is down: 503, never a 500
    _add_request_schemas(app, jobs.REQUEST_SCHEMAS)
    return app


def _add_request_schemas(app: FastAPI, models: tuple[type[BaseModel], ...]) -> None:
    """Put the models of request bodies that a route reads itself (POST /v1/jobs takes JSON or
    multipart) into the OpenAPI document's components, where the route's body refers."""
    document = app.openapi

    def openapi() -> dict[str, Any]:
        schema = document()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in found.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components.setdefault(model.__name__, found)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
