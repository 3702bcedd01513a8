"""/v1/jobs: upload a dataset, follow the job, fetch its report and files, cancel or delete."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse

from app import crud
from app.auth import check_active_jobs, upload_too_large
from app.deps import CeleryDep, CurrentOwner, SessionDep, SettingsDep
from app.models import FINISHED, Job, JobStatus
from app.problems import ProblemError, problem_responses
from app.schemas import ClassRow, JobOut, JobPage
from app.settings import Settings
from app.storage import UploadTooLarge, delete_job_files, save_upload, storage_for, upload_path
from app.storage_http import artifact_response
from pipeline.config import RunConfig
from worker.celery_app import enqueue_job

# Every route here needs an API key and sees only its owner's jobs; any of them answers 503
# while the database is unreachable (app/problems.py).
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=problem_responses(401, 503))

# A string, not uuid.UUID: an id that cannot exist is "not found" (404), not a 422.
JobId = Annotated[
    str, PathParam(description="The job's id.", examples=["0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11"])
]
# OpenAPI links: the `id` of a new job is the `job_id` of the routes about it (clients and
# tools such as Schemathesis follow them). Its event stream is left out: it stays open until
# the job ends.
JOB_ROUTES = {
    "GetJob": ("/v1/jobs/{job_id}", "get"),
    "GetReport": ("/v1/jobs/{job_id}/report", "get"),
    "GetReportHtml": ("/v1/jobs/{job_id}/report.html", "get"),
    "GetClasses": ("/v1/jobs/{job_id}/classes", "get"),
    "GetBalancedDataset": ("/v1/jobs/{job_id}/balanced-dataset", "get"),
    "GetSamples": ("/v1/jobs/{job_id}/samples.png", "get"),
    "DeleteJob": ("/v1/jobs/{job_id}", "delete"),
}
JOB_LINKS = {
    name: {
        "operationRef": "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method,
        "parameters": {"job_id": "$response.body#/id"},
        "description": f"`id` of the new job as `job_id` of {method.upper()} {path}.",
    }
    for name, (path, method) in JOB_ROUTES.items()
}
# Documented bounds of the page parameters: past them a request is a 422, never a number the
# database cannot hold (a 64-bit OFFSET overflowed into a 500).
PAGE_SIZE_LIMIT = 1000
OFFSET_LIMIT = 2**31 - 1
CONFIG_EXAMPLE = '{"preset": "quick", "target": 500, "seed": 0}'
REPORT_EXAMPLE = {
    "dataset": {"image_size": [28, 28], "channels": 1, "test_source": "split"},
    "classes": [{"name": "cat", "train_count": 40, "synthetic_count": 360, "test_count": 10}],
    "methods": {"gan": {"accuracy": 0.9, "balanced_accuracy": 0.88, "macro_f1": 0.87}},
    "config": {"preset": "quick"},
}


@router.post(
    "",
    status_code=202,
    summary="Upload a dataset zip and start a balancing job",
    response_description="The job, queued. `Location` is its URL.",
    responses={202: {"links": JOB_LINKS}, **problem_responses(413, 422, 429, 503)},
)
def create_job(
    response: Response,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
    dataset: Annotated[
        UploadFile, File(description="Zip of `<class>/<image>` or `train|test/<class>/<image>`.")
    ],
    config: Annotated[
        str | None,
        Form(description="JSON object of run options (as the CLI's).", examples=[CONFIG_EXAMPLE]),
    ] = None,
) -> JobOut:
    run_config = _parse_config(config)
    check_active_jobs(session, settings, owner)
    job_id = uuid.uuid4()
    try:
        size = save_upload(settings, job_id, dataset.file)
        if size > (owner_limit := settings.max_upload_bytes_for(owner)):
            raise upload_too_large(owner_limit, size)
        _inspect_dataset(upload_path(settings, job_id), run_config, settings)
        storage_for(settings).keep_upload(job_id)  # 503 if the store is down
    except UploadTooLarge:
        delete_job_files(settings, job_id)
        raise _too_large(settings) from None
    except BaseException:
        delete_job_files(settings, job_id)
        raise
    job = Job(
        id=job_id,
        owner=owner,
        status=JobStatus.queued.value,
        config=run_config.resolved().to_dict(),
    )
    session.add(job)
    session.commit()
    _undo_if_over_limit(session, settings, job)
    _enqueue_or_undo(session, settings, celery, job)
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return JobOut.of(job)


@router.get("", summary="List your jobs, newest first")
def list_jobs(
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=PAGE_SIZE_LIMIT,
            description="Page size. The server sends at most BALANCER_PAGE_SIZE_MAX jobs per "
            "page (100 by default); the answer's `limit` says how many it allowed.",
        ),
    ] = 20,
    offset: Annotated[
        int, Query(ge=0, le=OFFSET_LIMIT, description="Jobs to skip, newest first.")
    ] = 0,
) -> JobPage:
    limit = min(limit, settings.page_size_max)
    jobs, total = crud.list_jobs(session, owner, limit, offset)
    return JobPage(items=[JobOut.of(j) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", summary="Status and progress of a job", responses=problem_responses(404))
def get_job(job_id: JobId, owner: CurrentOwner, session: SessionDep) -> JobOut:
    return JobOut.of(_job_or_404(session, job_id, owner))


@router.get(
    "/{job_id}/report",
    summary="The comparison report (the CLI's report.json)",
    responses={
        200: {"content": {"application/json": {"example": REPORT_EXAMPLE}}},
        **problem_responses(404, 409),
    },
)
def get_report(job_id: JobId, owner: CurrentOwner, session: SessionDep) -> dict[str, Any]:
    job = _succeeded_or_409(session, job_id, owner)
    return JSONResponse(job.report)  # type: ignore[return-value] (stored as the CLI wrote it)


@router.get(
    "/{job_id}/classes",
    summary="Per-class counts and accuracy for each method",
    responses=problem_responses(404, 409),
)
def get_classes(job_id: JobId, owner: CurrentOwner, session: SessionDep) -> list[ClassRow]:
    job = _succeeded_or_409(session, job_id, owner)
    return [ClassRow.model_validate(r) for r in crud.class_rows(session, job.id)]


@router.get(
    "/{job_id}/balanced-dataset",
    summary="Download the balanced dataset zip",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}, **problem_responses(404, 409)},
)
def get_balanced_dataset(
    job_id: JobId, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> Response:
    job = _succeeded_or_409(session, job_id, owner)
    name = f"balanced-{job.id}.zip"
    return artifact_response(settings, job.id, "balanced.zip", "application/zip", filename=name)


@router.get(
    "/{job_id}/samples.png",
    summary="A grid of real and generated images per class",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}, **problem_responses(404, 409)},
)
def get_samples(
    job_id: JobId, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> Response:
    job = _succeeded_or_409(session, job_id, owner)
    return artifact_response(settings, job.id, "samples.png", "image/png")


# The report is self-contained (inline styles, data: images) and has no scripts: allow no more.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox"
REPORT_HTML_EXAMPLE = "<!doctype html><html><head><title>Balancing report</title></head>..."


@router.get(
    "/{job_id}/report.html",
    summary="The report as one self-contained HTML page (tables, charts, sample grids)",
    response_class=FileResponse,
    responses={
        200: {"content": {"text/html": {"example": REPORT_HTML_EXAMPLE}}},
        **problem_responses(404, 409),
    },
)
def get_report_html(
    job_id: JobId, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> Response:
    job = _succeeded_or_409(session, job_id, owner)
    headers = {"Content-Security-Policy": REPORT_CSP}
    media_type = "text/html; charset=utf-8"
    return artifact_response(settings, job.id, "report.html", media_type, headers=headers)


@router.delete(
    "/{job_id}",
    summary="Cancel a queued or running job, or delete a finished one and its files",
    status_code=204,
    responses={
        200: {"model": JobOut, "description": "A queued job, now canceled."},
        202: {"model": JobOut, "description": "A running job; it stops within seconds."},
        204: {"description": "A finished job, deleted with its files."},
        **problem_responses(404),
    },
)
def delete_job(
    job_id: JobId, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> Response:
    job = _job_or_404(session, job_id, owner)
    job_uuid = job.id
    if job.status in {s.value for s in FINISHED}:
        crud.delete_job(session, job_uuid)
        delete_job_files(settings, job_uuid)
        return Response(status_code=204)
    if crud.cancel_if_queued(session, job_uuid):
        return _job_json(session, job_uuid, owner, 200)
    if crud.request_cancel(session, job_uuid):
        return _job_json(session, job_uuid, owner, 202)
    # It finished between our read and our update: report what it is now.
    return _job_json(session, job_uuid, owner, 200)


def _parse_config(raw: str | None) -> RunConfig:
    values: Any = {}
    if raw and raw.strip():
        try:
            values = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _bad_config(f"config is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise _bad_config("config must be a JSON object, e.g. " + CONFIG_EXAMPLE)
    try:
        return RunConfig.from_dict(values)
    except ValueError as exc:
        raise _bad_config(str(exc)) from None
    except TypeError as exc:  # e.g. a string where a number belongs
        raise _bad_config(f"config has a value of the wrong type ({exc})") from None


def _inspect_dataset(path: Path, config: RunConfig, settings: Settings) -> None:
    """The upload-time checks (zip structure, layout, one capped read of every entry), so most
    bad uploads get their answer now, not from the job; images are decoded by the job. Any
    refusal, including zipfile's surprises on hostile bytes, is a 422 naming rule and entry."""
    from pipeline.errors import DatasetError
    from pipeline.layout import check_upload

    limits = settings.archive_limits()
    try:
        check_upload(path, test_fraction=config.test_fraction, seed=config.seed, limits=limits)
    except DatasetError as exc:
        raise ProblemError(
            422, "invalid-dataset", "The dataset is not usable", str(exc),
            rule=exc.rule, entry=exc.entry,
        ) from None  # fmt: skip


def _enqueue_or_undo(session: SessionDep, settings: Settings, celery: CeleryDep, job: Job) -> None:
    try:
        enqueue_job(celery, job.id)
    except Exception as exc:
        crud.delete_job(session, job.id)
        delete_job_files(settings, job.id)
        raise ProblemError(
            503, "broker-unavailable", "Cannot queue the job", f"the broker is unreachable: {exc}"
        ) from exc


def _undo_if_over_limit(session: SessionDep, settings: Settings, job: Job) -> None:
    """Two uploads at once can both pass the check before their upload: counted again with the
    new row in, one over the limit is undone (both, at worst; never one too many)."""
    try:
        check_active_jobs(session, settings, job.owner or "", adding=0)
    except BaseException:
        crud.delete_job(session, job.id)
        delete_job_files(settings, job.id)
        raise


def _job_or_404(session: SessionDep, job_id: str | uuid.UUID, owner: str) -> Job:
    """The owner's job. Another owner's job is "not found", word for word as an unknown id."""
    try:
        job = crud.get_owned_job(session, uuid.UUID(str(job_id)), owner)
    except ValueError:
        job = None
    if job is None:
        raise ProblemError(404, "job-not-found", "Job not found", f"no job with id {job_id}")
    return job


def _succeeded_or_409(session: SessionDep, job_id: str, owner: str) -> Job:
    job = _job_or_404(session, job_id, owner)
    if job.status != JobStatus.succeeded.value:
        detail = f"the job is {job.status}; its results exist once it has succeeded"
        if job.error:
            detail += f" (error: {job.error})"
        raise ProblemError(
            409, "job-not-finished", "Job has no results", detail, job_status=job.status
        )
    return job


def _job_json(session: SessionDep, job_id: uuid.UUID, owner: str, status: int) -> Response:
    job = _job_or_404(session, job_id, owner)
    return JSONResponse(JobOut.of(job).model_dump(mode="json"), status_code=status)


def _too_large(settings: Settings) -> ProblemError:
    limit = settings.max_upload_bytes
    return ProblemError(413, "upload-too-large", "Upload too large", f"the limit is {limit} bytes")


def _bad_config(detail: str) -> ProblemError:
    return ProblemError(422, "invalid-config", "Invalid config", detail)
