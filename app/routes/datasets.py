"""/v1/datasets: upload a dataset once, list, describe and delete datasets; jobs run on them
by id (POST /v1/jobs with `dataset_id`). Built-in datasets (pipeline/builtin_datasets.py) are
listed to every owner and can be used, not deleted."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, BinaryIO

from fastapi import APIRouter, File, Query, Response, UploadFile
from fastapi import Path as PathParam
from sqlalchemy.orm import Session

from app.auth import upload_too_large
from app.deps import CurrentOwner, SessionDep, SettingsDep
from app.problems import ProblemError, problem_responses
from app.schemas import DatasetOut, DatasetPage
from jobs import dataset_store
from jobs.models import Dataset
from jobs.settings import Settings
from jobs.storage import UploadTooLarge, dataset_path, file_digest, stage_dataset, storage_for
from pipeline.builtin_datasets import BUILTIN, DEMO_MNIST, is_builtin
from pipeline.errors import DatasetError
from pipeline.layout import DatasetLayout, check_upload

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=problem_responses(401, 503))

DatasetId = Annotated[
    str,
    PathParam(
        description="The dataset's id: a built-in one's name or an uploaded one's UUID.",
        examples=[DEMO_MNIST.id],
        max_length=64,
    ),
]
PAGE_SIZE_LIMIT = 1000
OFFSET_LIMIT = 2**31 - 1


def _link(operation: str, method: str, description: str, **target: object) -> dict:
    ref = "#/paths/" + operation.replace("~", "~0").replace("/", "~1") + "/" + method
    return {"operationRef": ref, "description": description, **target}


def dataset_links(source: str) -> dict[str, dict]:
    """OpenAPI links from a dataset's id at `source` (a runtime expression) to the routes
    that take it."""
    return {
        "CreateJobOnDataset": _link(
            "/v1/jobs", "post", "Start a job on this dataset.",
            requestBody={"dataset_id": source, "config": {"preset": "quick"}},
        ),
        "GetDataset": _link(
            "/v1/datasets/{dataset_id}", "get", "This dataset.",
            parameters={"dataset_id": source},
        ),
        "DeleteDataset": _link(
            "/v1/datasets/{dataset_id}", "delete", "Delete this dataset.",
            parameters={"dataset_id": source},
        ),
    }  # fmt: skip


@router.post(
    "",
    status_code=201,
    summary="Upload a dataset zip once, for any number of jobs",
    response_description="The dataset as checked: classes, counts, image sizes, warnings. "
    "`Location` is its URL.",
    responses={
        201: {"links": dataset_links("$response.body#/id")},
        **problem_responses(400, 413, 422, 503),
    },
)
def create_dataset(
    response: Response,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    dataset: Annotated[
        UploadFile,
        File(
            description="Zip of `<class>/<image>`, `train|test/<class>/<image>`, or "
            "`labels.csv` (file,label[,split]) with the images it names."
        ),
    ],
) -> DatasetOut:
    row = accept_dataset(session, settings, owner, dataset.file, dataset.filename)
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return DatasetOut.of(row)


@router.get(
    "",
    summary="List the built-in datasets and yours (newest first)",
    responses={200: {"links": dataset_links("$response.body#/items/0/id")}},
)
def list_datasets(
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=PAGE_SIZE_LIMIT,
            description="Page size; the server sends at most BALANCER_PAGE_SIZE_MAX per page.",
        ),
    ] = 20,
    offset: Annotated[int, Query(ge=0, le=OFFSET_LIMIT, description="Datasets to skip.")] = 0,
) -> DatasetPage:
    limit = min(limit, settings.page_size_max)
    builtins = [_builtin_out(settings, i) for i in sorted(BUILTIN)]
    shown = builtins[offset : offset + limit]
    rows, owned = dataset_store.list_owned(
        session, owner, limit - len(shown), max(offset - len(builtins), 0)
    )
    items = shown + [DatasetOut.of(r) for r in rows]
    return DatasetPage(items=items, total=len(builtins) + owned, limit=limit, offset=offset)


@router.get(
    "/{dataset_id}",
    summary="A dataset: classes, counts per class and split, image sizes, warnings",
    responses={200: {"links": dataset_links("$response.body#/id")}, **problem_responses(404)},
)
def get_dataset(
    dataset_id: DatasetId, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> DatasetOut:
    if is_builtin(dataset_id):
        return _builtin_out(settings, dataset_id)
    return DatasetOut.of(_owned_or_404(session, dataset_id, owner))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    summary="Delete a dataset you uploaded (not while queued or running jobs use it)",
    description="409 while queued or running jobs use the dataset (the problem lists them in "
    "`jobs`), and for a built-in dataset, which nobody may delete.",
    responses={
        204: {"description": "Deleted, with its stored zip. Jobs that ran on it keep their "
              "results."},
        **problem_responses(404, 409),
    },
)  # fmt: skip
def delete_dataset(
    dataset_id: DatasetId, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> Response:
    if is_builtin(dataset_id):
        raise ProblemError(
            409, "dataset-builtin", "Built-in dataset",
            f"{dataset_id} is built in: every owner may use it, nobody may delete it",
        )  # fmt: skip
    row = _owned_or_404(session, dataset_id, owner)
    users = dataset_store.delete_unless_in_use(session, row)
    if users:
        shown = ", ".join(str(j) for j in users[:5]) + (", ..." if len(users) > 5 else "")
        raise ProblemError(
            409, "dataset-in-use", "Dataset in use",
            f"{len(users)} queued or running job(s) use this dataset ({shown}); cancel them "
            "or wait for them to end, then delete it",
            jobs=[str(j) for j in users],
        )  # fmt: skip
    storage_for(settings).delete_dataset(row.id)
    return Response(status_code=204)


def accept_dataset(
    session: Session,
    settings: Settings,
    owner: str,
    source: BinaryIO,
    filename: str | None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """The door checks of an upload (size, zip structure, layout, every entry read once and
    every image's header), then the dataset stored and its row committed; a refusal leaves
    nothing behind."""
    dataset_id = uuid.uuid4()
    staged = dataset_path(settings, dataset_id)
    try:
        size = stage_dataset(settings, dataset_id, source)
        if size > (owner_limit := settings.max_upload_bytes_for(owner)):
            raise upload_too_large(owner_limit, size)
        layout = inspect_upload(staged, settings, test_fraction, seed)
        _, sha256 = file_digest(staged)
        storage_for(settings).keep_dataset(dataset_id, staged)  # 503 if the store is down
    except UploadTooLarge:
        staged.unlink(missing_ok=True)
        raise too_large(settings) from None
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    row = Dataset(
        id=dataset_id,
        owner=owner,
        name=_display_name(filename),
        size_bytes=size,
        sha256=sha256,
        summary=dataset_store.summarize(layout),
    )
    try:
        session.add(row)
        session.commit()
    except BaseException:
        session.rollback()
        storage_for(settings).delete_dataset(dataset_id)
        staged.unlink(missing_ok=True)
        raise
    return row


def inspect_upload(
    path: Path, settings: Settings, test_fraction: float, seed: int
) -> DatasetLayout:
    """The upload-time checks; any refusal, including zipfile's surprises on hostile bytes,
    is a 422 naming rule and entry. Images are decoded by the job."""
    limits = settings.archive_limits()
    try:
        return check_upload(path, test_fraction=test_fraction, seed=seed, limits=limits)
    except DatasetError as exc:
        raise ProblemError(
            422, "invalid-dataset", "The dataset is not usable", str(exc),
            rule=exc.rule, entry=exc.entry,
        ) from None  # fmt: skip


def discard(session: Session, settings: Settings, dataset_id: uuid.UUID) -> None:
    """Undo accept_dataset (a job that was to run on it could not be created)."""
    row = session.get(Dataset, dataset_id)
    if row is not None:
        session.delete(row)
        session.commit()
    storage_for(settings).delete_dataset(dataset_id)
    dataset_path(settings, dataset_id).unlink(missing_ok=True)


def too_large(settings: Settings) -> ProblemError:
    limit = settings.max_upload_bytes
    return ProblemError(413, "upload-too-large", "Upload too large", f"the limit is {limit} bytes")


def not_found(dataset_id: str) -> ProblemError:
    return ProblemError(
        404, "dataset-not-found", "Dataset not found", f"no dataset with id {dataset_id}"
    )


def _owned_or_404(session: Session, dataset_id: str, owner: str) -> Dataset:
    """The owner's dataset. Another owner's is "not found", word for word as an unknown id."""
    row = dataset_store.get_owned(session, dataset_id, owner)
    if row is None:
        raise not_found(dataset_id)
    return row


def _builtin_out(settings: Settings, dataset_id: str) -> DatasetOut:
    summary = dict(dataset_store.builtin_summary(settings, dataset_id))
    name, size = summary.pop("name"), summary.pop("size_bytes")
    return DatasetOut.build(
        dataset_id, summary, name=name, size_bytes=size, created_at=None, builtin=True
    )


def _display_name(filename: str | None) -> str:
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or "dataset.zip"
