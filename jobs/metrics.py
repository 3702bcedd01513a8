"""Service-wide job totals for GET /metrics, kept in the database (the metric_totals table).

Whichever process ends a job (a worker, an API's sweeper, an API cancelling a queued job)
adds it here, so every API process reports the same totals, however many processes there
are. Counters are not computed from the job rows because deleting a job would make them go
down. Each total is one atomic upsert (value = value + x), so concurrent writers never lose
an increment. They are written just after the job's own transition commits, in a
transaction of their own: a failure here is logged and never fails the job; a process dying
between the two loses one observation.

Histograms are stored per bucket (not cumulative) plus a sum; the collector
(app/observability.py) cumulates them and derives the count.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs.models import Job, MetricTotal

log = logging.getLogger(__name__)

FINISHED_TOTAL = "balancer_jobs_finished_total"
JOB_DURATION = "balancer_job_duration_seconds"
STAGE_DURATION = "balancer_stage_duration_seconds"
BUCKET, SUM = ":bucket", ":sum"
# Jobs take seconds (a small dataset on a GPU) to hours (a large one on a CPU).
DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600, math.inf)
# report["timings"] key -> pipeline stage (pipeline/run.py STAGES).
STAGE_TIMINGS = {
    "loading_seconds": "validating",
    "gan_seconds": "training_gan",
    "classifier_seconds": "training_classifier",
    "evaluation_seconds": "evaluating",
    "packaging_seconds": "packaging",
}


def record_finish(
    session: Session, job_id: uuid.UUID, outcome: str, report: dict[str, Any] | None = None
) -> None:
    """Count a job that just ended (committed already) as `outcome`; observe its run time
    (started -> finished; a job cancelled before it started has none) and, from a succeeded
    job's report, each stage's seconds. Commits; never raises."""
    try:
        times = select(Job.started_at, Job.finished_at).where(Job.id == job_id)
        row = session.execute(times).first()
        add(session, FINISHED_TOTAL, {"outcome": outcome}, 1.0)
        if row is not None and row.started_at and row.finished_at:
            seconds = (row.finished_at - row.started_at).total_seconds()
            observe(session, JOB_DURATION, {"outcome": outcome}, max(seconds, 0.0))
        timings = (report or {}).get("timings") or {}
        for key, stage in STAGE_TIMINGS.items():
            if isinstance(timings.get(key), int | float):
                observe(session, STAGE_DURATION, {"stage": stage}, float(timings[key]))
        session.commit()
    except Exception:  # metrics must never fail a job
        session.rollback()
        log.exception("job %s: could not record its end in metric_totals", job_id)


def observe(session: Session, metric: str, labels: dict[str, str], value: float) -> None:
    le = next(b for b in DURATION_BUCKETS if value <= b)
    add(session, metric + BUCKET, labels | {"le": le_label(le)}, 1.0)
    add(session, metric + SUM, labels, value)


def add(session: Session, metric: str, labels: dict[str, str], amount: float) -> None:
    """value += amount for (metric, labels), creating the row if needed, atomically."""
    key = json.dumps(labels, sort_keys=True)
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(MetricTotal).values(metric=metric, labels=key, value=amount)
        stmt = stmt.on_conflict_do_update(
            index_elements=["metric", "labels"], set_={"value": MetricTotal.value + amount}
        )
        session.execute(stmt)
        return
    bump = update(MetricTotal).where(MetricTotal.metric == metric, MetricTotal.labels == key)
    if session.execute(bump.values(value=MetricTotal.value + amount)).rowcount == 0:
        session.add(MetricTotal(metric=metric, labels=key, value=amount))
        session.flush()


def read_totals(session: Session) -> Iterable[tuple[str, dict[str, str], float]]:
    """Every (metric, labels, value) row."""
    for metric, labels, value in session.execute(
        select(MetricTotal.metric, MetricTotal.labels, MetricTotal.value)
    ):
        yield metric, json.loads(labels), value


def le_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else str(float(bound))
