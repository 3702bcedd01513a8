"""Bodies of the API: responses, and the JSON body of a job on a stored dataset (multipart
bodies are validated in their routes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.job_config import CONFIG_EXAMPLE, JobConfig
from jobs.models import Dataset, Job, JobStatus, utcnow
from pipeline.builtin_datasets import DEMO_MNIST

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
    "dataset_id": DEMO_MNIST.id,
    "links": {
        "self": "/v1/jobs/0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11",
        "dataset": f"/v1/datasets/{DEMO_MNIST.id}",
    },
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
    dataset_id: str | None = Field(
        None, description="The dataset the job runs on (null: a job from before datasets)."
    )
    links: dict[str, str] = Field(
        description="The job itself, its dataset and, once succeeded, its files."
    )

    @classmethod
    def of(cls, job: Job) -> JobOut:
        base = f"/v1/jobs/{job.id}"
        links = {"self": base}
        if job.dataset_id:
            links["dataset"] = f"/v1/datasets/{job.dataset_id}"
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


class JobRequest(BaseModel):
    """A job on a stored dataset: an uploaded one of yours, or a built-in one."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        json_schema_extra={"example": {"dataset_id": DEMO_MNIST.id, "config": CONFIG_EXAMPLE}},
    )

    dataset_id: str = Field(
        min_length=1,
        max_length=64,
        description=f"A dataset's id (GET /v1/datasets), e.g. the built-in `{DEMO_MNIST.id}`.",
        examples=[DEMO_MNIST.id],
    )
    config: JobConfig = Field(  # type: ignore[valid-type]
        default_factory=JobConfig, description="Run options; any left out take their default."
    )


class SplitCounts(BaseModel):
    train: int
    test: int


class ImageSizes(BaseModel):
    min: list[int] = Field(description="Smallest width and height, in pixels.")
    max: list[int] = Field(description="Largest width and height, in pixels.")


_DATASET_EXAMPLE = {
    "id": DEMO_MNIST.id,
    "name": DEMO_MNIST.name,
    "builtin": True,
    "created_at": None,
    "size_bytes": 377133,
    "classes": ["1", "2", "3"],
    "counts": {
        "1": {"train": 10, "test": 200},
        "2": {"train": 300, "test": 200},
        "3": {"train": 300, "test": 200},
    },
    "test_source": "explicit",
    "layout": "folders",
    "images": 1210,
    "image_size": {"min": [28, 28], "max": [28, 28]},
    "mode": "grayscale",
    "warnings": [],
    "links": {"self": f"/v1/datasets/{DEMO_MNIST.id}", "jobs": "/v1/jobs"},
}


class DatasetOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": _DATASET_EXAMPLE})

    id: str = Field(description="Pass it as `dataset_id` to POST /v1/jobs.")
    name: str = Field(description="The uploaded file's name, or the built-in dataset's.")
    builtin: bool = Field(description="A built-in dataset: every owner may use it.")
    created_at: datetime | None
    size_bytes: int
    classes: list[str]
    counts: dict[str, SplitCounts] = Field(
        description="Images per class in training and test. Where the zip has no test split, "
        "as a job with the default test_fraction (0.2) would split it."
    )
    test_source: Literal["explicit", "split"] = Field(
        description="explicit: the zip names its test images; split: a job holds some out."
    )
    layout: Literal["folders", "csv"] = Field(description="Class folders, or labels.csv.")
    images: int
    image_size: ImageSizes
    mode: Literal["grayscale", "rgb"] = Field(description="rgb if any image has colour.")
    warnings: list[str] = Field(description="E.g. skipped files; the dataset is usable.")
    links: dict[str, str]

    @classmethod
    def of(cls, dataset: Dataset) -> DatasetOut:
        return cls.build(
            str(dataset.id),
            dataset.summary,
            name=dataset.name,
            created_at=dataset.created_at,
            size_bytes=dataset.size_bytes,
            builtin=False,
        )

    @classmethod
    def build(cls, dataset_id: str, summary: dict[str, Any], **fields: Any) -> DatasetOut:
        links = {"self": f"/v1/datasets/{dataset_id}", "jobs": "/v1/jobs"}
        keys = set(cls.model_fields) - {"id", "links", *fields}
        known = {k: summary[k] for k in keys if k in summary}
        return cls(id=dataset_id, links=links, **known, **fields)


class DatasetPage(BaseModel):
    items: list[DatasetOut] = Field(description="Built-in datasets first, then yours, newest first")
    total: int
    limit: int
    offset: int
