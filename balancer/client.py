"""A Python client for the balancer web service.

    from balancer import Client
    client = Client("http://127.0.0.1:8000", api_key="gb_...")
    job = client.submit("my_dataset/", preset="quick").wait()
    print(job.status, job.classes())
    job.download_balanced("balanced.zip")

    dataset = client.upload_dataset("my_dataset.zip")      # once
    for seed in (0, 1):                                      # then any number of jobs on it
        client.submit(dataset_id=dataset.id, preset="quick", seed=seed)
    client.submit(dataset_id="demo-mnist-1-2-3", preset="quick")  # the built-in demo digits

Errors the service answers (application/problem+json, RFC 9457) raise `ServiceError`; a
service that cannot be reached raises `ServiceUnreachable`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import IO, Any

import httpx

from balancer._events import parse_events
from balancer._zipstream import multipart_body, zip_chunks

log = logging.getLogger(__name__)

FINISHED = frozenset({"succeeded", "failed", "canceled"})
MAX_REDIRECTS = 5
# The service sends a keep-alive comment every 15 s; a stream silent for longer is broken.
EVENTS_READ_TIMEOUT_S = 60.0
DOWNLOAD_CHUNK_BYTES = 1024**2


class ServiceError(Exception):
    """An error answer of the service. `rule` and `entry` name the check a refused dataset
    failed and the zip entry (or class folder) at fault; `body` is the whole problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        rule: str | None = None,
        entry: str | None = None,
        type: str = "about:blank",  # noqa: A002 (the RFC 9457 member's name)
        body: dict[str, Any] | None = None,
    ) -> None:
        self.status, self.title, self.detail = status, title, detail
        self.rule, self.entry, self.type = rule, entry, type
        self.body = body or {}
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.status} {self.title}"
        if self.detail:
            text += f": {self.detail}"
        if self.rule:
            text += f" (rule {self.rule}" + (f", entry {self.entry}" if self.entry else "") + ")"
        return text

    @classmethod
    def from_response(cls, response: httpx.Response) -> ServiceError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):  # e.g. a proxy's HTML error page
            phrase = _phrase(response.status_code)
            return cls(response.status_code, phrase, response.text[:500].strip() or None)
        return cls(
            status=int(body.get("status") or response.status_code),
            title=str(body.get("title") or _phrase(response.status_code)),
            detail=body.get("detail"),
            rule=body.get("rule"),
            entry=body.get("entry"),
            type=str(body.get("type") or "about:blank"),
            body=body,
        )


class ServiceUnreachable(ConnectionError):
    """No answer from the service: refused connection, unknown host, timeout, cut stream."""


class Client:
    """The service at `url`, used with `api_key` (default: the BALANCER_API_KEY variable)."""

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        key = api_key if api_key is not None else os.environ.get("BALANCER_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        # For redirects to another host (e.g. a presigned storage URL): never sends the key.
        self._bare = httpx.Client(timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._bare.close()

    def submit(
        self,
        dataset: str | os.PathLike[str] | bytes | IO[bytes] | None = None,
        *,
        dataset_id: str | None = None,
        **config: Any,
    ) -> Job:
        """Start a job, on a dataset stored in the service (`dataset_id`: one uploaded with
        `upload_dataset`, or a built-in one such as "demo-mnist-1-2-3"), or on `dataset`,
        uploaded with the job (and kept as a dataset): a zip (path, bytes or binary file) or a
        folder of class folders, zipped while it uploads. `config` takes the options of
        `balancer run` (preset, target, gan_iterations, epochs, seeds, seed, ...)."""
        options = {k: v for k, v in config.items() if v is not None}
        if (dataset is None) == (dataset_id is None):
            raise ValueError("give either a dataset to upload or the dataset_id of a stored one")
        if dataset_id is not None:
            body = {"dataset_id": dataset_id, "config": options}
            return Job(self, self._request("POST", "/v1/jobs", json=body).json())
        return Job(self, self._upload("/v1/jobs", dataset, options).json())

    def upload_dataset(self, dataset: str | os.PathLike[str] | bytes | IO[bytes]) -> Dataset:
        """Upload a dataset once (a zip, or a folder zipped while it uploads); start any number
        of jobs on it with `submit(dataset_id=dataset.id)`. The service checks it as it checks
        a job's upload; a refusal raises ServiceError naming the rule and the entry."""
        return Dataset(self, self._upload("/v1/datasets", dataset, {}).json())

    def dataset(self, dataset_id: str) -> Dataset:
        """A dataset by its id (yours or a built-in one)."""
        return Dataset(self, self._request("GET", f"/v1/datasets/{dataset_id}").json())

    def datasets(self, limit: int = 100, offset: int = 0) -> list[Dataset]:
        """The built-in datasets, then yours, newest first."""
        params = {"limit": limit, "offset": offset}
        page = self._request("GET", "/v1/datasets", params=params).json()
        return [Dataset(self, item) for item in page["items"]]

    def _upload(
        self,
        route: str,
        dataset: str | os.PathLike[str] | bytes | IO[bytes],
        options: dict[str, Any],
    ) -> httpx.Response:
        if isinstance(dataset, bytes) or hasattr(dataset, "read"):
            return self._post_zip(route, "dataset.zip", dataset, options)  # type: ignore[arg-type]
        path = Path(dataset)  # type: ignore[arg-type]
        if path.is_dir():
            name = f"{path.resolve().name}.zip"
            content_type, body = multipart_body(name, zip_chunks(path), options)
            headers = {"Content-Type": content_type}
            return self._request("POST", route, content=body, headers=headers)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file or folder")
        with path.open("rb") as file:
            return self._post_zip(route, path.name, file, options)

    def job(self, job_id: str) -> Job:
        """A job submitted earlier, by its id."""
        return Job(self, self._request("GET", f"/v1/jobs/{job_id}").json())

    def jobs(self, limit: int = 20, offset: int = 0) -> list[Job]:
        """Your jobs, newest first."""
        page = self._request("GET", "/v1/jobs", params={"limit": limit, "offset": offset}).json()
        return [Job(self, item) for item in page["items"]]

    def _post_zip(
        self, route: str, name: str, file: bytes | IO[bytes], options: dict[str, Any]
    ) -> httpx.Response:
        data = {"config": json.dumps(options)} if options else None
        files = {"dataset": (name, file, "application/zip")}
        return self._request("POST", route, data=data, files=files)

    def _request(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, route, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise ServiceError.from_response(response)
        return response

    def _unreachable(self, exc: Exception) -> ServiceUnreachable:
        return ServiceUnreachable(f"cannot reach the service at {self.url}: {exc!r}")

    @contextlib.contextmanager
    def _stream(self, route: str, timeout: httpx.Timeout | None = None) -> Iterator[httpx.Response]:
        """GET `route` as a stream, following redirects: same-origin ones with the API key,
        others (e.g. to presigned storage URLs) without it."""
        request = self._http.build_request("GET", route, timeout=timeout or self._http.timeout)
        client = self._http
        try:
            for _ in range(MAX_REDIRECTS + 1):
                response = client.send(request, stream=True)
                if not response.is_redirect:
                    break
                target = response.url.join(response.headers["location"])
                response.close()
                client = self._http if _same_origin(target, self._http.base_url) else self._bare
                request = client.build_request("GET", target)
            else:
                raise ServiceUnreachable(f"more than {MAX_REDIRECTS} redirects from {route}")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        try:
            if response.status_code >= 400:
                response.read()
                raise ServiceError.from_response(response)
            yield response
        finally:
            response.close()

    def _download(self, route: str, path: str | os.PathLike[str]) -> Path:
        dest = Path(path)
        partial = dest.with_name(dest.name + ".part")
        try:
            with self._stream(route) as response, partial.open("wb") as out:
                for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                    out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise self._unreachable(exc) from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(dest)
        return dest


class Job:
    """A job of the service. `info` is the job as last fetched (`refresh()`, `wait()`)."""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self.client, self.info = client, info

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.status}>"

    id = property(lambda self: str(self.info["id"]))
    status = property(lambda self: self.info["status"], doc="queued, running, succeeded, ...")
    stage = property(lambda self: self.info.get("stage"))
    progress = property(lambda self: float(self.info.get("progress") or 0.0))
    eta_seconds = property(lambda self: self.info.get("eta_seconds"))
    error = property(lambda self: self.info.get("error"), doc="Why the job failed.")
    dataset_id = property(lambda self: self.info.get("dataset_id"), doc="What it runs on.")

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def refresh(self) -> Job:
        self.info = self.client._request("GET", self._route()).json()
        return self

    def wait(
        self,
        progress: bool = True,
        *,
        poll_interval: float = 1.0,
        timeout: float | None = None,
        events: bool = True,
    ) -> Job:
        """Block until the job ends; returns the job (check `status`). Follows the job's
        Server-Sent Events, and polls its status instead if the stream cannot be had or
        breaks (e.g. behind a proxy that buffers or cuts it). `progress` draws a tqdm bar
        (stage, percent, the service's ETA) on stderr. TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.info.get("deleted"):
            return self
        bar = _ProgressBar(progress)
        try:
            bar.show(self.info)
            if events and not self.finished and self._follow_events(bar, deadline):
                bar.show(self.refresh().info)
                return self
            while not self.refresh().finished:
                bar.show(self.info)
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {self.status} after {timeout} s")
                time.sleep(poll_interval)
            bar.show(self.info)
            return self
        finally:
            bar.close()

    def _follow_events(self, bar: _ProgressBar, deadline: float | None) -> bool:
        """True once the stream said the job ended; False if it could not tell (polling
        takes over)."""
        timeout = httpx.Timeout(self.client._http.timeout.connect, read=EVENTS_READ_TIMEOUT_S)
        try:
            with self.client._stream(self._route("/events"), timeout) as response:
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    log.info("job %s: no event stream (%s); polling", self.id, response.status_code)
                    return False
                for name, data in parse_events(response.iter_lines()):
                    if name == "progress":
                        self.info.update(data)
                        bar.show(self.info)
                    elif name == "end":
                        return True
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"job {self.id} still {self.status}")
        except (ServiceUnreachable, httpx.HTTPError, ValueError) as exc:
            log.info("job %s: event stream broke (%r); polling", self.id, exc)
        except ServiceError as exc:
            if exc.status in (401, 403, 404):  # the job or the key is gone: polling won't help
                raise
            log.info("job %s: event stream refused (%s); polling", self.id, exc)
        return False

    def report(self) -> dict[str, Any]:
        """report.json: per-method metrics with intervals, comparisons, GAN quality, timings."""
        return self.client._request("GET", self._route("/report")).json()

    def classes(self) -> list[dict[str, Any]]:
        """Per class and method: train/synthetic/test counts, accuracy (recall) and F1."""
        return self.client._request("GET", self._route("/classes")).json()

    def download_balanced(self, path: str | os.PathLike[str]) -> Path:
        """Write the balanced dataset zip to `path`."""
        return self.client._download(self._route("/balanced-dataset"), path)

    def download_report_html(self, path: str | os.PathLike[str]) -> Path:
        """Write the self-contained HTML report to `path`."""
        return self.client._download(self._route("/report.html"), path)

    def download_samples(self, path: str | os.PathLike[str]) -> Path:
        """Write the real-vs-generated sample grid (PNG) to `path`."""
        return self.client._download(self._route("/samples.png"), path)

    def cancel(self) -> Job:
        """Cancel a running job (it stops within seconds, and stays readable as canceled);
        a queued job is canceled and deleted, a finished one deleted with its files (then
        `info["deleted"]` is True)."""
        response = self.client._request("DELETE", self._route())
        if response.status_code == 204:  # deleted: a queued job canceled on the way
            status = self.status if self.finished else "canceled"
            self.info = {**self.info, "status": status, "deleted": True}
        else:
            self.info = response.json()
        return self

    def _route(self, tail: str = "") -> str:
        return f"/v1/jobs/{self.id}{tail}"


class Dataset:
    """A dataset stored in the service. `info` is what the service answered: classes,
    counts per class and split, image sizes and mode, warnings."""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self.client, self.info = client, info

    def __repr__(self) -> str:
        return f"<Dataset {self.id} {self.classes}>"

    id = property(lambda self: str(self.info["id"]))
    name = property(lambda self: self.info.get("name"))
    classes = property(lambda self: list(self.info["classes"]), doc="Class names.")
    counts = property(lambda self: self.info["counts"], doc="{class: {train, test}}")
    builtin = property(lambda self: bool(self.info.get("builtin")))
    warnings = property(lambda self: list(self.info.get("warnings") or []))

    def submit(self, **config: Any) -> Job:
        """Start a job on this dataset; `config` as for Client.submit."""
        return self.client.submit(dataset_id=self.id, **config)

    def delete(self) -> None:
        """Delete the dataset (ServiceError 409 while queued or running jobs use it)."""
        self.client._request("DELETE", f"/v1/datasets/{self.id}")


class _ProgressBar:
    """tqdm bar: the stage as description, percent done, and the service's ETA."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=100,
                bar_format="{desc} {percentage:3.0f}%|{bar}|",
                leave=True,
            )

    def show(self, info: dict[str, Any]) -> None:
        if self._bar is None:
            return
        status, stage = info.get("status"), info.get("stage")
        label = stage if status == "running" and stage else str(status)
        eta = info.get("eta_seconds")
        self._bar.set_description_str(f"{label:<19} {'ETA ' + _duration(eta) if eta else '':>9}")
        self._bar.n = round(100 * float(info.get("progress") or 0.0), 1)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _same_origin(url: httpx.URL, base: httpx.URL) -> bool:
    return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
