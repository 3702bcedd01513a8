"""The S3 backend of jobs/storage/: any S3-compatible store (AWS, SeaweedFS, MinIO, ...).

Keys, under the URL's prefix:
    uploads/<job id>.zip        the accepted upload, stored by the API after its checks
    datasets/<dataset id>.zip   an uploaded dataset, stored by the API after its checks
    jobs/<job id>/<name>        the outputs of the job's successful attempt

A retried attempt writes the same keys. The job turns succeeded only after every output is
stored and recorded (with size and SHA-256) in the database, so a half-uploaded attempt never
looks finished: the API serves outputs of succeeded jobs only.

Each host keeps only scratch in its DATA_DIR: the API's staged upload until it is stored, a
worker's copy of the upload and the attempt's outputs until the attempt ends.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from jobs.storage.base import (
    ATTEMPT_PREFIX,
    UPLOAD_NAME,
    ArtifactMissing,
    Download,
    StillOurs,
    StorageUnavailable,
    StoredArtifact,
    file_digest,
    output_files,
    parse_job_id,
    remove_path,
)

log = logging.getLogger(__name__)
MiB = 1024**2
STREAM_CHUNK = MiB
DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
MEDIA_TYPES = {".zip": "application/zip", ".png": "image/png", ".json": "application/json"}
MEDIA_TYPES[".html"] = "text/html; charset=utf-8"


def client_config(**overrides: Any) -> Config:
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},  # bucket in the path: works with any host name
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
        # Checksums only where the API requires them: several S3-compatible servers reject
        # the CRC headers that recent botocore sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        **overrides,
    )


def split_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/")."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Storage:
    def __init__(
        self,
        url: str,
        scratch_dir: Path,
        endpoint_url: str = "",
        public_endpoint_url: str = "",
        presign: bool = True,
        presign_expires_s: int = 300,
        part_size: int = 8 * MiB,
    ) -> None:
        self.bucket, self.prefix = split_url(url)
        self.scratch = scratch_dir
        self.endpoint = endpoint_url or None
        self.description = f"s3://{self.bucket}/{self.prefix} at {self.endpoint or 'AWS'}"
        self.presign, self.presign_expires_s = presign, presign_expires_s
        session = boto3.session.Session()  # credentials and region: the AWS_* variables
        region = session.region_name or "us-east-1"
        self.client = session.client(
            "s3", endpoint_url=self.endpoint, region_name=region, config=client_config()
        )
        self.public_client = session.client(
            "s3",
            endpoint_url=public_endpoint_url or self.endpoint,
            region_name=region,
            config=client_config(),
        )
        # Multipart above one part: an upload is streamed from its file part by part,
        # never held in memory whole.
        self.transfer = TransferConfig(
            multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=4
        )

    # --- keys -------------------------------------------------------------------------------

    def upload_key(self, job_id: uuid.UUID) -> str:
        return f"{self.prefix}uploads/{job_id}.zip"

    def dataset_key(self, dataset_id: uuid.UUID) -> str:
        return f"{self.prefix}datasets/{dataset_id}.zip"

    def output_prefix(self, job_id: uuid.UUID) -> str:
        return f"{self.prefix}jobs/{job_id}/"

    def _scratch_job(self, job_id: uuid.UUID) -> Path:
        return self.scratch / str(job_id)

    # --- the interface ----------------------------------------------------------------------

    def keep_upload(self, job_id: uuid.UUID) -> None:
        staged = self._scratch_job(job_id) / UPLOAD_NAME
        with self._errors("storing the upload"):
            self.client.upload_file(
                str(staged), self.bucket, self.upload_key(job_id), Config=self.transfer,
                ExtraArgs={"ContentType": "application/zip"},
            )  # fmt: skip
        shutil.rmtree(self._scratch_job(job_id), ignore_errors=True)

    def fetch_upload(self, job_id: uuid.UUID, attempt: int) -> Path:
        return self._fetch(self.upload_key(job_id), job_id, attempt, "the upload")

    def keep_dataset(self, dataset_id: uuid.UUID, staged: Path) -> None:
        with self._errors("storing the dataset"):
            self.client.upload_file(
                str(staged), self.bucket, self.dataset_key(dataset_id), Config=self.transfer,
                ExtraArgs={"ContentType": "application/zip"},
            )  # fmt: skip
        staged.unlink(missing_ok=True)

    def fetch_dataset(self, dataset_id: uuid.UUID, job_id: uuid.UUID, attempt: int) -> Path:
        return self._fetch(self.dataset_key(dataset_id), job_id, attempt, "the dataset")

    def delete_dataset(self, dataset_id: uuid.UUID) -> None:
        try:
            self._delete_keys([self.dataset_key(dataset_id)])
        except StorageUnavailable as exc:
            log.warning("dataset %s: could not delete its stored zip: %s", dataset_id, exc)

    def stored_datasets(self, older_than: datetime) -> set[uuid.UUID]:
        found = set()
        for obj in self._list(self.prefix + "datasets/"):
            name = obj["Key"][len(self.prefix + "datasets/") :].removesuffix(".zip")
            dataset_id = parse_job_id(name)
            if dataset_id and obj["LastModified"] <= older_than:
                found.add(dataset_id)
        return found

    def _fetch(self, key: str, job_id: uuid.UUID, attempt: int, what: str) -> Path:
        """A copy of `key` in the attempt's scratch, removed by release_scratch."""
        target = self._scratch_job(job_id) / f"{ATTEMPT_PREFIX}{attempt}.zip"
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._errors(f"fetching {what}"):
            self.client.download_file(self.bucket, key, str(target), Config=self.transfer)
        return target

    def publish(self, job_id: uuid.UUID, work: Path, still_ours: StillOurs) -> list[StoredArtifact]:
        stored = []
        for name, path in output_files(work):
            still_ours()  # an attempt that lost its job stops writing at once
            size, sha256 = file_digest(path)
            key = self.output_prefix(job_id) + name
            extra = {"ContentType": MEDIA_TYPES.get(path.suffix, "application/octet-stream")}
            with self._errors(f"storing {name}"):
                self.client.upload_file(
                    str(path), self.bucket, key, Config=self.transfer, ExtraArgs=extra
                )
            stored.append(StoredArtifact(name, key, size, sha256))
        return stored

    def discard_outputs(self, job_id: uuid.UUID) -> None:
        self._delete_prefix(self.output_prefix(job_id))

    def release_scratch(self, job_id: uuid.UUID, attempt: int) -> None:
        folder = self._scratch_job(job_id)
        for name in (f"{ATTEMPT_PREFIX}{attempt}", f"{ATTEMPT_PREFIX}{attempt}.zip"):
            remove_path(folder / name)
        with contextlib.suppress(OSError):  # another attempt on this host may still work in it
            folder.rmdir()

    def download(self, job_id: uuid.UUID, name: str, filename: str | None = None) -> Download:
        key = self.output_prefix(job_id) + name
        if self.presign:
            params = {"Bucket": self.bucket, "Key": key}
            if filename:
                params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
            with self._errors("signing a download"):
                url = self.public_client.generate_presigned_url(
                    "get_object", Params=params, ExpiresIn=self.presign_expires_s
                )
            return Download(url=url)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in {"NoSuchKey", "404"}:
                raise ArtifactMissing(f"{name} of job {job_id} is not in the store") from None
            raise StorageUnavailable(_explain(exc, self, "reading " + name)) from None
        except BotoCoreError as exc:
            raise StorageUnavailable(_explain(exc, self, "reading " + name)) from None
        return Download(size=obj["ContentLength"], chunks=_stream(obj["Body"]))

    def delete_job(self, job_id: uuid.UUID) -> None:
        try:
            self._delete_keys([self.upload_key(job_id)])
            self._delete_prefix(self.output_prefix(job_id))
        except StorageUnavailable as exc:  # the sweeper removes the orphans later
            log.warning("job %s: could not delete its stored files: %s", job_id, exc)

    def stored_jobs(self, older_than: datetime) -> set[uuid.UUID]:
        newest: dict[uuid.UUID, datetime] = {}
        for kind in ("uploads/", "jobs/"):
            for obj in self._list(self.prefix + kind):
                rest = obj["Key"][len(self.prefix + kind) :]
                job_id = parse_job_id(rest.split("/", 1)[0].removesuffix(".zip"))
                if job_id:
                    seen = newest.get(job_id, obj["LastModified"])
                    newest[job_id] = max(obj["LastModified"], seen)
        return {job_id for job_id, when in newest.items() if when <= older_than}

    def check(self) -> None:
        with self._errors("checking the bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def create_if_missing(self) -> bool:
        """Create the bucket unless it exists; True if it was created."""
        try:
            self.check()
            return False
        except StorageUnavailable as exc:
            if "does not exist" not in str(exc):
                raise
        with self._errors("creating the bucket"):
            self.client.create_bucket(Bucket=self.bucket)
        return True

    # --- helpers ----------------------------------------------------------------------------

    def _errors(self, doing: str) -> _Translate:
        return _Translate(self, doing)

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        with self._errors("listing objects"):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    def _delete_prefix(self, prefix: str) -> None:
        self._delete_keys([obj["Key"] for obj in self._list(prefix)])

    def _delete_keys(self, keys: list[str]) -> None:
        with self._errors("deleting objects"):
            for start in range(0, len(keys), DELETE_BATCH):
                batch = [{"Key": k} for k in keys[start : start + DELETE_BATCH]]
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )


class _Translate:
    """Turns boto's exceptions into StorageUnavailable with a sentence a person can act on."""

    def __init__(self, storage: S3Storage, doing: str) -> None:
        self.storage, self.doing = storage, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
            exc = exc.__context__  # the managed upload's wrapper: explain the cause
        if isinstance(exc, ClientError | BotoCoreError | Boto3Error):
            raise StorageUnavailable(_explain(exc, self.storage, self.doing)) from None
        return False


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _explain(exc: Exception, storage: S3Storage, doing: str) -> str:
    where = f"the object store ({storage.description})"
    if isinstance(exc, ClientError):
        code = _code(exc)
        if code in {"NoSuchBucket"} or (code == "404" and "bucket" in doing):
            return f"{where}: the bucket {storage.bucket!r} does not exist ({doing})"
        if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"}:
            return f"{where} refused our credentials ({code}) while {doing}"
        return f"{where} answered {code or 'an error'} while {doing}"
    if isinstance(exc, BotoCoreError) and "credentials" in str(exc).lower():
        return f"{where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    return f"{where} is unreachable ({type(exc).__name__}) while {doing}"


def _stream(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(STREAM_CHUNK)
    finally:
        body.close()
