"""/v1/jobs: start a job on a dataset (stored, or uploaded with the job), follow it, fetch its
report and files, cancel or delete it."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from celery import Celery
from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUpload

from app.auth import check_active_jobs
from app.deps import CeleryDep, CurrentOwner, SessionDep, SessionsDep, SettingsDep
from app.job_config import CONFIG_EXAMPLE, JobConfig, bad_config, parse_config
from app.problems import ProblemError, problem_responses
from app.routes import datasets
from app.schemas import ClassRow, JobOut, JobPage, JobRequest
from app.storage_http import artifact_response
from jobs import crud, state
from jobs.models import FINISHED, Job, JobStatus
from jobs.queue import enqueue_job
from jobs.settings import Settings
from jobs.storage import delete_job_files
from jobs.submit import DatasetNotFound, QueueUnavailable, submit
from pipeline.builtin_datasets import DEMO_MNIST
from pipeline.config import RunConfig

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


def job_links(source: str) -> dict[str, dict[str, Any]]:
    """OpenAPI links from a job's id at `source` (a runtime expression) to the routes about
    the job."""
    return {
        name: {
            "operationRef": "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method,
            "parameters": {"job_id": source},
            "description": f"The job's `id` as `job_id` of {method.upper()} {path}.",
        }
        for name, (path, method) in JOB_ROUTES.items()
    }


JOB_LINKS = job_links("$response.body#/id")
# From a job to its dataset (null for a job from before datasets: then not followed).
DATASET_LINK = {
    "GetJobDataset": {
        "operationRef": "#/paths/~1v1~1datasets~1{dataset_id}/get",
        "parameters": {"dataset_id": "$response.body#/dataset_id"},
        "description": "The dataset the job runs on.",
    }
}
# Documented bounds of the page parameters: past them a request is a 422, never a number the
# database cannot hold (a 64-bit OFFSET overflowed into a 500).
PAGE_SIZE_LIMIT = 1000
OFFSET_LIMIT = 2**31 - 1
CREATE_DESCRIPTION = f"""Two ways in:

- `application/json`: `{{"dataset_id": ..., "config": {{...}}}}` runs a job on a stored
  dataset, one you uploaded (POST /v1/datasets) or a built-in one such as `{DEMO_MNIST.id}`;
- `multipart/form-data`: a `dataset` zip and an optional `config` (a JSON object as a
  string) store the zip as a new dataset (listed by GET /v1/datasets) and start a job on it.

`config` takes the CLI's run options; any left out take their default.
"""
CREATE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/JobRequest"},
            "example": {"dataset_id": DEMO_MNIST.id, "config": CONFIG_EXAMPLE},
        },
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["dataset"],
                "additionalProperties": False,
                "properties": {
                    "dataset": {
                        "type": "string",
                        "format": "binary",
                        "description": "Zip of `<class>/<image>`, `train|test/<class>/<image>` "
                        "or `labels.csv` with the images it names.",
                    },
                    "config": {
                        "type": "string",
                        "description": "JSON object of run options (as the CLI's).",
                        "example": json.dumps(CONFIG_EXAMPLE),
                    },
                },
            },
        },
    },
}
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# Schemas the JSON body refers to, added to the document's components (app/problems.py).
REQUEST_SCHEMAS = (JobRequest, JobConfig)
REPORT_EXAMPLE = {
    "dataset": {"image_size": [28, 28], "channels": 1, "test_source": "split"},
    "classes": [{"name": "cat", "train_count": 40, "synthetic_count": 360, "test_count": 10}],
    "methods": {"gan": {"accuracy": 0.9, "balanced_accuracy": 0.88, "macro_f1": 0.87}},
    "config": {"preset": "quick"},
}


@router.post(
    "",
    status_code=202,
    summary="Start a balancing job on a stored dataset (JSON) or on an uploaded zip (multipart)",
    description=CREATE_DESCRIPTION,
    response_description="The job, queued. `Location` is its URL.",
    responses={
        202: {"links": JOB_LINKS | DATASET_LINK},
        **problem_responses(400, 404, 413, 415, 422, 429, 503),
    },
    openapi_extra={"requestBody": CREATE_BODY},
)
async def create_job(
    request: Request,
    response: Response,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    celery: CeleryDep,
) -> JobOut:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "application/json":
        body = _job_request(await request.body())
        config = parse_config(body.config.model_dump(exclude_unset=True))
        job = await run_in_threadpool(
            _create_on_dataset, session, settings, celery, owner, body.dataset_id, config
        )
    elif kind in FORM_TYPES:  # a urlencoded form cannot hold the file: a 422 names it
        async with request.form(max_files=2, max_fields=10) as form:
            upload, config = _form_parts(form)
            job = await run_in_threadpool(
                _create_with_upload, session, settings, celery, owner, upload, config
            )
    else:
        raise ProblemError(
            415, "unsupported-media-type", "Unsupported Media Type",
            "send application/json ({\"dataset_id\": ..., \"config\": {...}}) or "
            "multipart/form-data (a `dataset` zip and an optional `config`)",
        )  # fmt: skip
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


def _job_request(raw: bytes) -> JobRequest:
    try:
        return JobRequest.model_validate_json(raw or b"null")
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        raise ProblemError(
            422, "validation-error", "Request validation failed", detail, errors=errors
        ) from None


def _form_parts(form: FormData) -> tuple[StarletteUpload, RunConfig]:
    """The multipart form's `dataset` file and its `config` (a JSON object as a string)."""
    upload = form.get("dataset")
    raw = form.get("config")
    unknown = sorted(set(form.keys()) - {"dataset", "config"})
    if unknown:  # the schema allows these two fields only
        names = ", ".join(repr(n) for n in unknown[:5])
        raise ProblemError(
            422, "validation-error", "Request validation failed",
            f"body: unknown form field(s) {names}; send `dataset` and optionally `config`",
            errors=[{"loc": ["body", n], "msg": "unknown field", "type": "extra"} for n in unknown],
        )  # fmt: skip
    if not isinstance(upload, StarletteUpload):
        msg = "Field required" if upload is None else "Expected a file, got a string"
        raise ProblemError(
            422, "validation-error", "Request validation failed", f"body.dataset: {msg}",
            errors=[{"loc": ["body", "dataset"], "msg": msg, "type": "missing"}],
        )  # fmt: skip
    if raw is not None and not isinstance(raw, str):
        raise bad_config("config must be a form field holding a JSON object, not a file")
    values: Any = {}
    if raw and raw.strip():
        try:
            values = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise bad_config(f"config is not valid JSON: {exc}") from None
    return upload, parse_config(values)


def _create_on_dataset(
    session: Session,
    settings: Settings,
    celery: Celery,
    owner: str,
    dataset_id: str,
    config: RunConfig,
) -> Job:
    """Queue a job on a stored dataset: the owner's own or a built-in one."""
    check_active_jobs(session, settings, owner)
    try:
        return submit(
            session, settings, owner, dataset_id, config.resolved().to_dict(),
            send=lambda job_id: enqueue_job(celery, job_id),
            # Two uploads at once can both pass the check before their upload: counted again
            # with the new row in, one over the limit is undone (both, at worst; never one
            # too many).
            recheck=lambda job: check_active_jobs(session, settings, job.owner or "", adding=0),
        )  # fmt: skip
    except DatasetNotFound:
        raise datasets.not_found(dataset_id) from None
    except QueueUnavailable as exc:
        raise ProblemError(
            503, "broker-unavailable", "Cannot queue the job", f"the broker is unreachable: {exc}"
        ) from exc.__cause__


def _create_with_upload(
    session: Session,
    settings: Settings,
    celery: Celery,
    owner: str,
    upload: StarletteUpload,
    config: RunConfig,
) -> Job:
    """The multipart form: store the zip as a new dataset, then queue a job on it; if the job
    cannot be queued, the dataset goes too."""
    check_active_jobs(session, settings, owner)
    dataset = datasets.accept_dataset(
        session, settings, owner, upload.file, upload.filename,
        test_fraction=config.test_fraction, seed=config.seed,
    )  # fmt: skip
    try:
        return _create_on_dataset(session, settings, celery, owner, str(dataset.id), config)
    except BaseException:
        session.rollback()
        datasets.discard(session, settings, dataset.id)
        raise


@router.get(
    "",
    summary="List your jobs, newest first",
    responses={200: {"links": job_links("$response.body#/items/0/id")}},
)
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


@router.get(
    "/{job_id}",
    summary="Status and progress of a job",
    responses={200: {"links": JOB_LINKS | DATASET_LINK}, **problem_responses(404)},
)
async def get_job(job_id: JobId, owner: CurrentOwner, sessions: SessionsDep) -> JobOut:
    # The route clients poll: async, with its one database read in one thread-pool call
    # (a sync route with a session dependency took four hand-offs to the pool per request).
    return await run_in_threadpool(_read_job, sessions, job_id, owner)


def _read_job(sessions: sessionmaker[Session], job_id: str, owner: str) -> JobOut:
    with sessions() as session:
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
    summary="Delete a job: a queued or finished one at once, a running one once it stopped",
    description="A queued job is canceled and deleted, a finished one deleted with its "
    "files (204: then a 404, as for any deleted resource). A running job is asked to stop "
    "(202); it ends `canceled` within seconds and can then be deleted. The job's dataset "
    "stays (DELETE /v1/datasets/{id}).",
    status_code=204,
    responses={
        200: {"model": JobOut, "description": "The job ended as it was asked to stop."},
        202: {"model": JobOut, "description": "A running job; it stops within seconds."},
        204: {"description": "A queued or finished job, deleted with its files."},
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
    if state.cancel_if_queued(session, job_uuid):  # counted as canceled, then gone
        crud.delete_job(session, job_uuid)
        delete_job_files(settings, job_uuid)
        return Response(status_code=204)
    if state.request_cancel(session, job_uuid):
        return _job_json(session, job_uuid, owner, 202)
    # It finished between our read and our update: report what it is now.
    return _job_json(session, job_uuid, owner, 200)


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
