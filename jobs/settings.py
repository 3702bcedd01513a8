"""One Settings object for the API, the worker and the CLI, read from BALANCER_* variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class OwnerLimits(BaseModel):
    """Limits for one owner, overriding the owner_max_* defaults; None keeps the default."""

    max_active_jobs: int | None = Field(None, ge=1)
    max_upload_bytes: int | None = Field(None, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BALANCER_", extra="ignore")

    data_dir: Path = Field(Path("./data"), description="Uploads, outputs and the embedded DBs.")
    # Empty means the embedded default: a SQLite file in data_dir.
    database_url: str = ""
    # Empty means the embedded broker: kombu's SQLAlchemy transport on a SQLite file, no server.
    broker_url: str = ""
    queue: str = "gpu"
    max_upload_bytes: int = Field(2 * 1024**3, ge=1)
    upload_chunk_bytes: int = Field(1024**2, ge=1024)
    # What an uploaded zip and its images may declare (pipeline.archive.ArchiveLimits, whose
    # defaults these are): checked at upload from the zip's directory, before anything is read.
    zip_max_entries: int = Field(200_000, ge=1)
    zip_max_total_bytes: int = Field(8 * 1024**3, ge=1, description="Declared, uncompressed.")
    zip_max_entry_bytes: int = Field(256 * 1024**2, ge=1, description="Declared, per entry.")
    zip_max_ratio: float = Field(100.0, gt=1.0, description="Uncompressed / compressed.")
    zip_ratio_min_bytes: int = Field(1024**2, ge=0, description="Smaller entries: no ratio check.")
    zip_max_name_length: int = Field(1024, ge=1)
    image_max_pixels: int = Field(4096 * 4096, ge=1, description="Width x height per image.")
    # A job running longer than this is stopped and marked failed.
    job_time_limit_s: int = Field(6 * 3600, ge=10)
    # Redis re-delivers unacknowledged messages after this; it must exceed the longest job or
    # a running job would be started a second time. 0 = job_time_limit_s + 1 h.
    visibility_timeout_s: int = Field(0, ge=0)
    progress_interval_s: float = Field(0.5, ge=0.0)
    max_attempts: int = Field(2, ge=1, description="Starts of one job before it is failed.")
    # Each worker process runs one tiny job on the GPU when it starts (pipeline/warmup.py), so
    # the first real job does not pay for CUDA start-up and the first graph captures.
    warm_up: bool = True
    # Jobs one worker process runs at once on its GPU, as threads sharing the GPU (each on its
    # own CUDA streams). 0 = worker/pool.py's DEFAULT_GPU_JOBS where a GPU is visible, else 1
    # (one job per process, as on a CPU). `balancer worker --gpus` applies it to each GPU.
    gpu_jobs: int = Field(0, ge=0, le=64)
    # Crash safety (worker/lease.py, jobs/sweeper.py). A running job holds a lease that its
    # worker renews every heartbeat_interval_s (0 = lease_s / 4); once the lease has lapsed the
    # worker is presumed dead and the sweeper re-queues the job (up to max_attempts starts).
    lease_s: float = Field(60.0, ge=1.0)
    heartbeat_interval_s: float = Field(0.0, ge=0.0)
    # How often each API process sweeps; 0 turns its sweeper off.
    sweep_interval_s: float = Field(10.0, ge=0.0)
    # A queued job whose message was handed to the broker this long ago without a worker
    # claiming it is sent again (a broker restarted without persistence loses messages).
    # Duplicates are harmless, claims are guarded; this only bounds how many there are.
    resend_queued_after_s: float = Field(600.0, ge=1.0)
    # Where uploads and outputs live (jobs/storage/). Empty = files under data_dir, shared by
    # the API and the workers. `s3://BUCKET/PREFIX` = an S3-compatible object store that every
    # host reaches; each host's data_dir is then only its scratch space. Credentials come from
    # the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION variables.
    storage_url: str = ""
    s3_endpoint_url: str = Field("", description="e.g. http://seaweedfs:8333; empty = AWS.")
    # The store's address as clients see it, for presigned URLs (empty = s3_endpoint_url).
    s3_public_endpoint_url: str = ""
    # Downloads: 307 to a presigned URL (true) or streamed through the API (false).
    s3_presign: bool = True
    s3_presign_expires_s: int = Field(300, ge=1, le=7 * 24 * 3600)
    # The sweeper deletes stored files of jobs that no longer exist (a DELETE whose store was
    # down, an API killed between storing an upload and creating its job) this often, once
    # they are older than orphan_grace_s (an upload is stored just before its job row).
    orphan_sweep_interval_s: float = Field(3600.0, ge=0.0, description="0 = never.")
    orphan_grace_s: float = Field(3600.0, ge=0.0)
    page_size_max: int = Field(100, ge=1)
    # API processes (uvicorn workers) that `balancer serve` and `balancer api` start on the
    # one port; each has its own sweeper, key cache and event poller. On a CPU that also
    # trains jobs one process leaves a core to the worker; more serve more clients at once.
    api_workers: int = Field(1, ge=1, le=64)
    # Niceness (0..19) of the worker that `balancer serve` starts, in its own session: above 0
    # the API answers first when it and a training job want the same cores, and the job runs on
    # what is left (on Linux with autogroups the session's group gets it as well, else the
    # process nice alone would not count against the API's session). 0 = equal shares.
    serve_worker_nice: int = Field(0, ge=0, le=19)
    # Seconds an API process trusts an API key it verified (app/auth.py KeyCache) before it
    # reads the key's row again: a revoked key is refused within this long. 0 = every request
    # reads the row (a revocation takes effect at once, at a database read per request).
    api_key_cache_s: float = Field(5.0, ge=0.0)
    # A job's event stream (GET /v1/jobs/{id}/events) closes after this many seconds without
    # its `end` event; the web page connects again (as EventSource does), balancer.Client polls
    # instead. 0 = open until the job ends. For tools that read each stream to its end.
    events_max_s: float = Field(0.0, ge=0.0)
    # Per owner (the owner of the API key): queued + running jobs at once, and upload size
    # (capped by max_upload_bytes; 0 = max_upload_bytes). owner_limits overrides them for
    # named owners, e.g. BALANCER_OWNER_LIMITS='{"lab": {"max_active_jobs": 10}}'.
    owner_max_active_jobs: int = Field(4, ge=1)
    owner_max_upload_bytes: int = Field(0, ge=0)
    owner_limits: dict[str, OwnerLimits] = Field(default_factory=dict)
    # Retry-After of a 429 (an owner at the active-job limit): roughly when a job may end.
    owner_retry_after_s: int = Field(60, ge=1)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'balancer.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
        if not self.visibility_timeout_s:
            self.visibility_timeout_s = self.job_time_limit_s + 3600
        if self.visibility_timeout_s <= self.job_time_limit_s:
            raise ValueError("visibility_timeout_s must be greater than job_time_limit_s")
        if not self.heartbeat_interval_s:
            self.heartbeat_interval_s = self.lease_s / 4
        if self.storage_url and not _is_s3_url(self.storage_url):
            raise ValueError("storage_url must be empty (local files) or s3://BUCKET[/PREFIX]")
        if self.heartbeat_interval_s * 2 > self.lease_s:
            raise ValueError("heartbeat_interval_s must be at most half of lease_s")
        return self

    def max_active_jobs_for(self, owner: str) -> int:
        override = self.owner_limits.get(owner)
        if override and override.max_active_jobs is not None:
            return override.max_active_jobs
        return self.owner_max_active_jobs

    def max_upload_bytes_for(self, owner: str) -> int:
        override = self.owner_limits.get(owner)
        limit = self.owner_max_upload_bytes or self.max_upload_bytes
        if override and override.max_upload_bytes is not None:
            limit = override.max_upload_bytes
        return min(limit, self.max_upload_bytes)

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def datasets_dir(self) -> Path:
        """Uploaded datasets (local files) or their staging (object store)."""
        return self.data_dir / "datasets"

    @property
    def builtin_dir(self) -> Path:
        """This host's copies of the built-in datasets (pipeline/builtin_datasets.py)."""
        return self.data_dir / "builtin"

    def ensure_dirs(self) -> None:
        """SQLite files and job folders need their parent folder to exist."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.datasets_dir.mkdir(parents=True, exist_ok=True)

    def archive_limits(self) -> ArchiveLimits:
        from pipeline.archive import ArchiveLimits  # here: the settings stay free of Pillow

        return ArchiveLimits(
            max_entries=self.zip_max_entries,
            max_total_bytes=self.zip_max_total_bytes,
            max_entry_bytes=self.zip_max_entry_bytes,
            max_ratio=self.zip_max_ratio,
            ratio_min_bytes=self.zip_ratio_min_bytes,
            max_name_length=self.zip_max_name_length,
            max_image_pixels=self.image_max_pixels,
        )


def _is_s3_url(url: str) -> bool:
    return url.startswith("s3://") and bool(url[5:].split("/", 1)[0])


if TYPE_CHECKING:  # imported at run time inside archive_limits() only
    from pipeline.archive import ArchiveLimits


@lru_cache
def get_settings() -> Settings:
    return Settings()
