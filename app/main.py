"""The app factory: `create_app(settings)`; `uvicorn --factory app.main:create_app` reads env."""

from __future__ import annotations

from fastapi import FastAPI

from app.auth import UploadGate
from app.db import make_engine, make_sessionmaker
from app.limits import BodySizeLimit
from app.observability import install_metrics
from app.problems import install_problem_handlers
from app.routes import events, health, jobs
from app.routes.docs import mount_docs
from app.routes.web import mount_web
from app.settings import Settings, get_settings
from app.storage_http import install_storage_handler
from app.sweeper import lifespan as sweeper_lifespan
from worker.celery_app import create_celery

DESCRIPTION = """
Upload a labeled image dataset (a zip of class folders). A worker trains one GAN per
under-represented class, fills the classes up with generated images, and compares a
classifier trained on the original, an oversampled and the GAN-balanced data.

Errors are `application/problem+json` (RFC 9457).
"""

TAGS = [
    {"name": "jobs", "description": "Balancing jobs: upload, follow, fetch results, cancel."},
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
        lifespan=sweeper_lifespan,  # re-queues jobs of dead workers (app/sweeper.py)
    )
    engine = make_engine(settings.database_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.celery = create_celery(settings)
    # Slack for the multipart envelope around the file and the config field.
    app.add_middleware(BodySizeLimit, path="/v1/jobs", limit=settings.max_upload_bytes + 1024**2)
    # Outermost: an upload without a valid key, or over its owner's limits, is refused unread.
    app.add_middleware(UploadGate, path="/v1/jobs")
    # Outside even that: /metrics counts and times every request, refused uploads included.
    install_metrics(app, app.state.sessionmaker)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(health.router)
    mount_docs(app)  # before mount_web: its /static mount would take /static/docs
    mount_web(app)
    install_problem_handlers(app)
    install_storage_handler(app)  # a store that is down: 503, never a 500
    return app
