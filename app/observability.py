"""GET /metrics: Prometheus figures of the API and of the jobs.

Two kinds of figures, each from where it is right:

- Jobs (`balancer_jobs`, `balancer_queue_depth`, `balancer_jobs_finished_total`, the job and
  stage duration histograms) are read from the database at scrape time (`JobsCollector`), so
  they are the whole service's, the same from every API process, whatever number of API
  processes and workers there are. With several API replicas, aggregate them with max(), not
  sum().
- Requests (`balancer_http_*`, `balancer_upload_bytes_total`,
  `balancer_uploads_refused_total`) are counted in memory by the process that served them
  (`RequestMetrics`), like any per-process Prometheus counter: scrape every API process
  (`balancer api` is one process) and sum(); they restart from 0 with the process, which
  rate() and increase() handle.

/metrics needs no API key: keep it on the operator's network (do not route it from outside).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobs import dataset_store
from jobs import metrics as job_metrics
from jobs.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)
UPLOAD_PATHS = ("/v1/jobs", "/v1/datasets")
OUTCOMES = ("succeeded", "failed", "canceled")
# Latency of API answers: milliseconds for status reads, seconds for uploads, the whole stream
# for /events (a route of its own, so it does not blur the others).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, sessions: sessionmaker[Session]) -> None:
    """/metrics with this app's own registry (several apps in one process stay apart)."""
    registry = CollectorRegistry()
    registry.register(JobsCollector(sessions))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    app.state.metrics_registry = registry
    app.add_middleware(RequestMetrics, registry=registry)
    app.include_router(router)


class JobsCollector(Collector):
    """The database's view of the jobs, queried at each scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "balancer_metrics_database_up",
            "1 if the job figures below could be read from the database at this scrape",
        )
        try:
            with self.sessions() as session:
                families = list(self._families(session))
        except SQLAlchemyError as exc:
            log.warning("/metrics: cannot read the job figures: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, session: Session) -> Iterator[Any]:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        jobs = GaugeMetricFamily("balancer_jobs", "Jobs by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], counts.get(status.value, 0))
        yield jobs
        queued = counts.get(JobStatus.queued.value, 0)
        yield GaugeMetricFamily(
            "balancer_queue_depth", "Jobs waiting for a worker (status queued)", value=queued
        )
        oldest = session.scalar(
            select(func.min(Job.created_at)).where(Job.status == JobStatus.queued.value)
        )
        age = (utcnow() - _aware(oldest)).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "balancer_oldest_queued_job_age_seconds",
            "How long the oldest queued job has waited (0 when none waits)",
            value=max(age, 0.0),
        )
        count, size = dataset_store.totals(session)
        yield GaugeMetricFamily(
            "balancer_datasets", "Uploaded datasets (built-in ones not counted)", value=count
        )
        yield GaugeMetricFamily(
            "balancer_dataset_bytes", "Stored bytes of the uploaded datasets", value=size
        )
        yield from _totals(job_metrics.read_totals(session))


def _totals(rows: Any) -> Iterator[Any]:
    counters: dict[str, float] = {o: 0.0 for o in OUTCOMES}
    buckets: dict[tuple[str, tuple], dict[str, float]] = defaultdict(dict)
    sums: dict[tuple[str, tuple], float] = {}
    for metric, labels, value in rows:
        if metric == job_metrics.FINISHED_TOTAL:
            counters[labels["outcome"]] = value
        elif metric.endswith(job_metrics.BUCKET):
            le = labels.pop("le")
            buckets[(metric.removesuffix(job_metrics.BUCKET), tuple(sorted(labels.items())))][
                le
            ] = value
        elif metric.endswith(job_metrics.SUM):
            sums[(metric.removesuffix(job_metrics.SUM), tuple(sorted(labels.items())))] = value
    finished = CounterMetricFamily(
        job_metrics.FINISHED_TOTAL, "Jobs that ended, by outcome", labels=["outcome"]
    )
    for outcome, value in counters.items():
        finished.add_metric([outcome], value)
    yield finished
    docs = {
        job_metrics.JOB_DURATION: ("Run time of ended jobs, start to end", "outcome"),
        job_metrics.STAGE_DURATION: ("Seconds per pipeline stage of succeeded jobs", "stage"),
    }
    for name, (doc, label) in docs.items():
        family = HistogramMetricFamily(name, doc, labels=[label])
        for (metric, labels), per_le in sorted(buckets.items()):
            if metric == name:
                family.add_metric(
                    [dict(labels)[label]], _cumulative(per_le), sums.get((metric, labels), 0.0)
                )
        yield family


def _cumulative(per_le: dict[str, float]) -> list[tuple[str, float]]:
    """Stored per-bucket counts -> Prometheus's cumulative buckets, every bound shown."""
    bounds = {job_metrics.le_label(b) for b in job_metrics.DURATION_BUCKETS} | set(per_le)
    total, out = 0.0, []
    for le in sorted(bounds, key=float):
        total += per_le.get(le, 0.0)
        out.append((le, total))
    return out


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)  # noqa: UP017


class RequestMetrics:
    """Counts and times every request by route template (`/v1/jobs/{job_id}`, never the
    id), and for uploads the body bytes received and the refusals by rule."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "balancer_http_requests_total",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "balancer_http_request_duration_seconds",
            "Time from request to the end of the answer, by method and route template",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upload_bytes = Counter(
            "balancer_upload_bytes_total",
            "Body bytes received by POST /v1/jobs and /v1/datasets, by whether the upload was "
            "accepted",
            ["outcome"],
            registry=registry,
        )
        self.refused = Counter(
            "balancer_uploads_refused_total",
            "Uploads answered with an error, by rule (the problem's `rule`, else its type)",
            ["rule", "status"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _Exchange(self, scope, receive, send).run()

    def route_of(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None and isinstance(getattr(route, "path", None), str):
            return route.path
        if scope["path"] in UPLOAD_PATHS:  # answered before routing, by the upload gates
            return scope["path"]
        return "unmatched"  # unknown paths: one label, whatever was asked


class _Exchange:
    """One request through the app, watched."""

    def __init__(self, owner: RequestMetrics, scope: Scope, receive: Receive, send: Send) -> None:
        self.owner, self.scope, self._receive, self._send = owner, scope, receive, send
        self.upload = scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS
        self.status = 500  # if the app raises before answering
        self.received = 0
        self.error_body: list[bytes] = []

    async def run(self) -> None:
        start = time.perf_counter()
        try:
            await self.owner.app(self.scope, self.receive, self.send)
        finally:
            route = self.owner.route_of(self.scope)
            method = self.scope["method"]
            self.owner.latency.labels(method, route).observe(time.perf_counter() - start)
            self.owner.requests.labels(method, route, str(self.status)).inc()
            if self.upload:
                self._count_upload()

    async def receive(self) -> Message:
        message = await self._receive()
        if self.upload and message["type"] == "http.request":
            self.received += len(message.get("body", b""))
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and self.upload and self.status >= 400:
            self.error_body.append(message.get("body", b""))
        await self._send(message)

    def _count_upload(self) -> None:
        accepted = self.status < 400
        self.owner.upload_bytes.labels("accepted" if accepted else "refused").inc(self.received)
        if not accepted:
            self.owner.refused.labels(self._rule(), str(self.status)).inc()

    def _rule(self) -> str:
        try:
            problem = json.loads(b"".join(self.error_body) or b"{}")
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        if problem.get("rule"):
            return str(problem["rule"])
        kind = str(problem.get("type") or "")
        if "/" in kind:  # tag:gan-balancer,2025:problem/upload-too-large
            return kind.rsplit("/", 1)[-1]
        title = str(problem.get("title") or "")  # about:blank problems: the status phrase
        return "-".join(title.lower().split()) or f"http-{self.status}"
