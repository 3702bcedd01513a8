"""Response bodies of the API (request bodies are multipart and validated in the route)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.models import Job, JobStatus, utcnow

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]

# An ETA from too little progress or too little time is noise, not an estimate.
ETA_MIN_PROGRESS = 0.05
ETA_MIN_ELAPSED_S = 2.0

_JOB_EXAMPLE = {
    "id": "0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11",
    "status": "running",
    "stage": "training_gan",
    "progress": 0.31,
    "eta_seconds": 84,
    "config": {"preset": "quick", "gan_iterations": 400, "epochs": 8, "seeds": 1},
    "created_at": "2025-01-01T12:00:00Z",
    "started_at": "2025-01-01T12:00:01Z",
    "finished_at": None,
    "error": None,
    "attempts": 1,
    "cancel_requested": False,
    "links": {"self": "/v1/jobs/0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11"},
}


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": _JOB_EXAMPLE})

    id: uuid.UUID
    status: Status
    stage: str | None = Field(description="validating, training_gan, training_classifier, ...")
    progress: float = Field(ge=0, le=1)
    eta_seconds: int | None = Field(
        None,
        description="Estimated seconds until the job ends, from its progress so far; null "
        "until it can be estimated (at least 5 % done and a few seconds in) and once it ended.",
        examples=[84],
    )
    config: dict[str, Any] = Field(description="The run's options, preset values filled in.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(description="Why the job failed, in words a person can act on.")
    attempts: int = Field(description="How many times a worker started the job.")
    cancel_requested: bool
    links: dict[str, str] = Field(description="The job itself and, once succeeded, its files.")

    @classmethod
    def of(cls, job: Job) -> JobOut:
        base = f"/v1/jobs/{job.id}"
        links = {"self": base}
        if job.status == JobStatus.succeeded.value:
            links |= {
                "report": f"{base}/report",
                "classes": f"{base}/classes",
                "balanced_dataset": f"{base}/balanced-dataset",
                "samples": f"{base}/samples.png",
                "report_html": f"{base}/report.html",
            }
        fields = {k: getattr(job, k) for k in cls.model_fields if k not in _COMPUTED}
        return cls(**fields, eta_seconds=eta_seconds(job), links=links)


_COMPUTED = {"links", "eta_seconds"}


def eta_seconds(job: Job, now: datetime | None = None) -> int | None:
    """Seconds left if the rest goes as fast as what is done: elapsed * (1 - p) / p."""
    if job.status != JobStatus.running.value or job.started_at is None:
        return None
    elapsed = ((now or utcnow()) - job.started_at).total_seconds()
    progress = job.progress or 0.0
    if progress < ETA_MIN_PROGRESS or elapsed < ETA_MIN_ELAPSED_S:
        return None
    return max(0, round(elapsed * (1.0 - min(progress, 1.0)) / progress))


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class ClassRow(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "example": {
                "class_name": "cat",
                "method": "gan",
                "train_count": 40,
                "synthetic_count": 360,
                "test_count": 20,
                "accuracy": 0.85,
                "f1": 0.81,
                "metrics": {"accuracy": 0.85, "f1": 0.81},
            }
        },
    )

    class_name: str
    method: str = Field(description="baseline, oversample or gan")
    train_count: int
    synthetic_count: int = Field(description="GAN images added to the class (gan rows only).")
    test_count: int
    accuracy: float | None = Field(description="Share of the class's test images recognised.")
    f1: float | None
    metrics: dict[str, Any] = Field(description="Every per-class figure of the report.")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = Field(default_factory=dict, examples=[{"database": "ok"}])
